"""`MMFTPromptProcessor`: images, a prompt per row (a question) for the text tower and the decoder, answers as targets.

It extends the captioning processor (`MMFTCaptionProcessor`: the decoder's tokenizer at the folder's top level, the
text tower's in `text_tokenizer/`) with a prompt per row instead of one fixed prompt. The question goes twice into the
model: the text tower reads it (`text_input_ids`, fused with the image by the bridge into the decoder's prefix), and
the decoder reads it as its prompt, after the prefix (unless `decoder_reads_question=False`: then only the prefix
carries it, and the decoder's rows are shorter). One decoder row is

    [start] [pad ...] question tokens [separator tokens] answer tokens [end] [pad ...]

where the model puts the image prefix right after `[start]`. The question part is left-padded (inside, after the
start token, which must stay at position 0) so every row's answer starts at the same position, and answers are
right-padded. Training and generation lay the prompt out alike: `generation_features` is the same row without the
answer. `labels` are -100 everywhere but on the answer tokens and the end token: the loss covers the answer only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature

from ...image_utils import to_rgb
from ...input_checks import check_texts
from ...labels import IGNORE_INDEX
from ..captioning.processing import MMFTCaptionProcessor

DEFAULT_SEPARATOR = " answer:"  # what the decoder reads between the question and its answer


class MMFTPromptProcessor(MMFTCaptionProcessor):
    """
    Prepares a prompted generation model's inputs: `pixel_values`; each row's prompt for the text tower
    (`text_input_ids`, `text_attention_mask`, at most `max_question_tokens` tokens); and for the decoder either the
    prompt to generate from (`input_ids`, `attention_mask`) or, with `answers=`, prompt and answer with `labels` on
    the answer tokens only. `max_caption_tokens` bounds the answer tokens trained on.

    Saved beside the model and loaded back with `AutoProcessor.from_pretrained(folder)` after `import mmft`.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        text_tokenizer=None,
        prompt: str = "answer the question",
        max_caption_tokens: int = 8,
        max_question_tokens: int = 32,
        separator: str = DEFAULT_SEPARATOR,
        decoder_reads_question: bool = True,
        **kwargs: Any,
    ) -> None:
        if max_question_tokens < 1:
            raise ValueError(f"max_question_tokens must be >= 1, got {max_question_tokens}")
        self.max_question_tokens = max_question_tokens
        self.separator = separator
        self.decoder_reads_question = decoder_reads_question
        super().__init__(image_processor, tokenizer, text_tokenizer, prompt, max_caption_tokens, **kwargs)

    def question_features(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """The questions as the text tower reads them: text_input_ids / text_attention_mask (B, Nt)."""
        encoded = self.text_tokenizer(
            list(check_texts(questions, "question")),
            padding=True,
            truncation=True,
            max_length=self.max_question_tokens,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        return {"text_input_ids": encoded["input_ids"], "text_attention_mask": encoded["attention_mask"]}

    def _prompts(self, questions: Sequence[str]) -> list[list[int]]:
        """Each question's decoder tokens (at most `max_question_tokens`; none without `decoder_reads_question`)
        followed by the separator's."""
        questions = list(check_texts(questions, "question"))
        if self.decoder_reads_question:
            bodies = self.tokenizer(questions, add_special_tokens=False)["input_ids"]
        else:  # the question reaches the decoder only through the bridge's prefix
            bodies = [[] for _ in questions]
        separator = self.tokenizer(self.separator, add_special_tokens=False)["input_ids"] if self.separator else []
        return [[*body[: self.max_question_tokens], *separator] for body in bodies]

    def _rows(self, prompts: list[list[int]], answers: list[list[int]] | None) -> dict[str, torch.Tensor]:
        ids = self.caption_token_ids()
        width = max(len(prompt) for prompt in prompts)
        answers = answers if answers is not None else [None] * len(prompts)
        rows, masks, targets = [], [], []
        for prompt, answer in zip(prompts, answers):
            padding = width - len(prompt)
            row, mask = [ids["bos"], *[ids["pad"]] * padding, *prompt], [1, *[0] * padding, *[1] * len(prompt)]
            target = [IGNORE_INDEX] * len(row)
            if answer is not None:
                tail = [*answer[: self.max_caption_tokens], ids["eos"]]
                row, mask, target = row + tail, mask + [1] * len(tail), target + tail
            rows.append(row)
            masks.append(mask)
            targets.append(target)
        length = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), length), ids["pad"], dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for index, (row, mask, target) in enumerate(zip(rows, masks, targets)):
            input_ids[index, : len(row)] = torch.tensor(row)
            attention_mask[index, : len(row)] = torch.tensor(mask)
            labels[index, : len(row)] = torch.tensor(target)
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        return {**features, "labels": labels} if answers[0] is not None else features

    def generation_features(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """The decoder's prompt to generate answers from: input_ids / attention_mask (B, 1 + Q), `[start] [pad ...]
        question [separator]`; the answer starts at position 1 + Q for every row."""
        return self._rows(self._prompts(questions), None)

    def answer_features(self, questions: Sequence[str], answers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Prompt and answer per row for training: input_ids / attention_mask / labels (B, T); labels are -100 but
        on the answer tokens and the end token after them."""
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        bodies = self.tokenizer(list(check_texts(answers, "answer")), add_special_tokens=False)["input_ids"]
        return self._rows(self._prompts(questions), bodies)

    def __call__(
        self,
        images: Image.Image | Sequence[Image.Image] | None = None,
        text: str | Sequence[str] | None = None,
        answers: str | Sequence[str] | None = None,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """`images` with one question each (`text`), and optionally the `answers` to train on; without answers the
        decoder inputs are the prompts to generate from."""
        if text is None:
            raise ValueError("MMFTPromptProcessor needs text= (a question per image)")
        questions = [text] if isinstance(text, str) else list(text)
        features: dict[str, Any] = {}
        if images is not None:
            images = [to_rgb(image) for image in ([images] if isinstance(images, Image.Image) else images)]
            if len(images) != len(questions):
                raise ValueError(f"{len(images)} images but {len(questions)} questions")
            features.update(self.image_processor(images, return_tensors="pt"))
        features.update(self.question_features(questions))
        if answers is None:
            features.update(self.generation_features(questions))
        else:
            features.update(self.answer_features(questions, [answers] if isinstance(answers, str) else list(answers)))
        return BatchFeature(features, tensor_type=return_tensors)

    def decode_answers(self, sequences: torch.Tensor, prompt_length: int) -> list[str]:
        """Generated ids (B, L) whose first `prompt_length` are the prompt -> answers: up to the first end token."""
        eos = self.caption_token_ids()["eos"]
        answers = []
        for row in sequences[:, prompt_length:].tolist():
            row = row[: row.index(eos)] if eos in row else row
            answers.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return answers


__all__ = ["DEFAULT_SEPARATOR", "MMFTPromptProcessor"]
