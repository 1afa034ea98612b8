"""`CaptionCollator`: a captioning batch: pixels, the fixed prompt, and one caption per example for the decoder."""

from __future__ import annotations

from typing import Any

import torch

from .collator import ImageTextCollator, stack

CAPTION_KEY = "caption"  # the one caption an example is trained on (the transform's `encode` picks it)


class CaptionCollator(ImageTextCollator):
    """`pixel_values`, `text_input_ids` / `text_attention_mask` (the processor's prompt), and the caption as
    `input_ids` / `attention_mask` / `labels` (-100 on padding) in the decoder's vocabulary.

    Training examples flagged as unreadable are dropped as in `ImageTextCollator`.
    """

    def __init__(self, processor) -> None:
        super().__init__(processor.tokenizer, processor.max_caption_tokens, "caption")
        self.processor = processor

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        examples = self._keep_good(examples)
        batch = {"pixel_values": stack([example["pixel_values"] for example in examples])}  # (B, 3, H, W)
        batch.update(self.processor.prompt_features(len(examples)))  # (B, Nt)
        batch.update(self.processor.caption_features([example[CAPTION_KEY] for example in examples]))  # (B, T)
        return batch


__all__ = ["CAPTION_KEY", "CaptionCollator"]
