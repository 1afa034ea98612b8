"""`MMFTCaptionProcessor`: images, the fixed prompt the text tower reads, and captions in the decoder's vocabulary.

A captioning model reads two token streams with two tokenizers: the decoder writes the caption with its own tokenizer
(`tokenizer`, saved at the folder's top level, so `processor.batch_decode`, the Trainer and pipelines use the one that
matches the generated ids), and the text tower reads a fixed `prompt` with its tokenizer (`text_tokenizer`, saved in
the `text_tokenizer/` subfolder; the prompt is saved too, so training and inference use the same one). A caption becomes
`[start] caption tokens [end]`, where start and end are the decoder tokenizer's BOS and EOS (or, for BERT-style
tokenizers, CLS and SEP); `caption_token_ids()` gives them to the model's generation config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature, ProcessorMixin

from ...image_utils import to_rgb
from ...input_checks import check_texts
from ...labels import IGNORE_INDEX
from ...processing_mmft import MMFTProcessor

DEFAULT_PROMPT = "describe the picture"


def caption_token_ids(tokenizer) -> dict[str, int | None]:
    """{"bos", "eos", "pad"}: the ids that start, end and pad a caption in `tokenizer`'s vocabulary."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if bos is None or eos is None:
        raise ValueError(
            f"the decoder tokenizer ({type(tokenizer).__name__}) has neither a BOS/EOS nor a CLS/SEP token to start "
            "and end captions; add them (tokenizer.add_special_tokens({'bos_token': ..., 'eos_token': ...}))"
        )
    return {"bos": bos, "eos": eos, "pad": pad}


class MMFTCaptionProcessor(MMFTProcessor):
    """
    Prepares a captioning model's inputs: `pixel_values`; the prompt for the text tower (`text_input_ids`,
    `text_attention_mask`); and for the decoder either the start token (to generate from) or, with `text=`, the
    captions (`input_ids`, `attention_mask`, and `labels` with -100 on padding).

    `tokenizer` is the decoder's, `text_tokenizer` the text tower's.

    Saved beside the model and loaded back with `AutoProcessor.from_pretrained(folder)` after `import mmft`.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        text_tokenizer=None,
        prompt: str = DEFAULT_PROMPT,
        max_caption_tokens: int = 32,
        **kwargs: Any,
    ) -> None:
        check_texts([prompt], "prompt")
        if max_caption_tokens < 1:
            raise ValueError(f"max_caption_tokens must be >= 1, got {max_caption_tokens}")
        self.prompt = prompt
        self.max_caption_tokens = max_caption_tokens
        ProcessorMixin.__init__(self, image_processor, tokenizer, text_tokenizer)

    def caption_token_ids(self) -> dict[str, int | None]:
        return caption_token_ids(self.tokenizer)

    def to_dict(self) -> dict[str, Any]:
        # AutoProcessor resolves `processor_class` among the classes registered for the config type, which for every
        # mmft model is `MMFTProcessor`; that class then hands the folder to the subclass named here.
        saved = super().to_dict()
        saved.update(processor_class=MMFTProcessor.__name__, mmft_processor_class=type(self).__name__)
        return saved

    def prompt_features(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The prompt for `batch_size` images: text_input_ids / text_attention_mask, (B, Nt)."""
        encoded = self.text_tokenizer([self.prompt], return_tensors="pt", return_token_type_ids=False)
        return {
            "text_input_ids": encoded["input_ids"].expand(batch_size, -1).clone(),
            "text_attention_mask": encoded["attention_mask"].expand(batch_size, -1).clone(),
        }

    def start_features(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The decoder's start token for `batch_size` captions to generate: input_ids / attention_mask, (B, 1)."""
        ids = torch.full((batch_size, 1), self.caption_token_ids()["bos"], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def caption_features(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        """`[start] tokens [end]` per caption (at most `max_caption_tokens` tokens between them), right-padded:
        input_ids / attention_mask / labels (B, T); labels are the ids with -100 on padding."""
        ids = self.caption_token_ids()
        bodies = self.tokenizer(list(check_texts(captions, "caption")), add_special_tokens=False)["input_ids"]
        rows = [[ids["bos"], *body[: self.max_caption_tokens], ids["eos"]] for body in bodies]
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), ids["pad"], dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            input_ids[index, : len(row)] = torch.tensor(row)
            attention_mask[index, : len(row)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def __call__(
        self,
        images: Image.Image | Sequence[Image.Image] | None = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """`images` (with the prompt and the start token to generate from), and/or `text`: captions to train on."""
        if images is None and text is None:
            raise ValueError("MMFTCaptionProcessor needs images=, text= (captions) or both")
        features: dict[str, Any] = {}
        if images is not None:
            images = [to_rgb(image) for image in ([images] if isinstance(images, Image.Image) else images)]
            features.update(self.image_processor(images, return_tensors="pt"))
            features.update(self.prompt_features(len(images)))
        if text is not None:
            features.update(self.caption_features([text] if isinstance(text, str) else list(text)))
        else:
            features.update(self.start_features(len(images)))
        return BatchFeature(features, tensor_type=return_tensors)

    def decode_captions(self, sequences: torch.Tensor) -> list[str]:
        """Generated ids (B, L) -> captions: the text after the start token, up to the first end token."""
        ids = self.caption_token_ids()
        captions = []
        for row in sequences.tolist():
            row = row[1:] if row and row[0] == ids["bos"] else row
            row = row[: row.index(ids["eos"])] if ids["eos"] in row else row
            captions.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return captions

    @classmethod
    def from_towers(
        cls,
        vision: str,
        text: str,
        decoder: str,
        image_size: int | None = None,
        vision_model_args: dict | None = None,
        **kwargs: Any,
    ) -> MMFTCaptionProcessor:
        """The processor of the towers and decoder named as `MMFTForConditionalGeneration.from_vision_text_pretrained`
        takes them (`kwargs`: `prompt`, `max_caption_tokens`)."""
        from ...towers import TOWER_SPECS

        base = MMFTProcessor.from_vision_text_pretrained(vision, text, image_size, vision_model_args)
        return cls(base.image_processor, TOWER_SPECS["decoder"].tokenizer(decoder), base.tokenizer, **kwargs)


__all__ = ["DEFAULT_PROMPT", "MMFTCaptionProcessor", "caption_token_ids"]
