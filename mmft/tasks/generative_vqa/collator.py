"""`AnswerCollator`: a generative VQA batch: pixels, the question for the text tower and the decoder, the answer."""

from __future__ import annotations

from typing import Any

import torch

from ...data.collator import TEXT_KEY, ImageTextCollator, stack

ANSWER_KEY = "answer"  # the one answer an example is trained on (the transform's `encode` picks it)


class AnswerCollator(ImageTextCollator):
    """`pixel_values`, the question as `text_input_ids` / `text_attention_mask` (text tower) and, with the answer, as
    `input_ids` / `attention_mask` / `labels` (decoder; labels on the answer tokens only: `MMFTPromptProcessor`).

    Training examples flagged as unreadable are dropped as in `ImageTextCollator`.
    """

    def __init__(self, processor) -> None:
        super().__init__(processor.tokenizer, processor.max_question_tokens, "question")
        self.processor = processor

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        examples = self._keep_good(examples)
        questions = [example[TEXT_KEY] for example in examples]
        batch = {"pixel_values": stack([example["pixel_values"] for example in examples])}  # (B, 3, H, W)
        batch.update(self.processor.question_features(questions))  # (B, Nt)
        batch.update(self.processor.answer_features(questions, [example[ANSWER_KEY] for example in examples]))
        return batch


__all__ = ["ANSWER_KEY", "AnswerCollator"]
