"""`ConversationCollator`: a batch of conversations: pixels, the first question for the text tower, and the whole
conversation for the decoder with labels on the assistant turns (`MMFTChatProcessor.conversation_features`)."""

from __future__ import annotations

from typing import Any

import torch

from ...data.collator import ImageTextCollator, stack
from .chat import chat_messages, first_question

CONVERSATION_KEY = "conversation"  # the row's turns, as the transform's `encode` passes them on


class ConversationCollator(ImageTextCollator):
    """`pixel_values`; `text_input_ids` / `text_attention_mask`: the first user turn (text tower); `input_ids` /
    `attention_mask` / `labels`: the conversation through the chat template (decoder). Training examples flagged as
    unreadable are dropped as in `ImageTextCollator`."""

    def __init__(self, processor) -> None:
        super().__init__(processor.tokenizer, processor.max_question_tokens, "question")
        self.processor = processor

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        examples = self._keep_good(examples)
        turns = [example[CONVERSATION_KEY] for example in examples]
        batch = {"pixel_values": stack([example["pixel_values"] for example in examples])}  # (B, 3, H, W)
        batch.update(self.processor.question_features([first_question(t) for t in turns]))  # (B, Nt)
        batch.update(self.processor.conversation_features([chat_messages(t) for t in turns]))  # (B, 1 + T)
        return batch


__all__ = ["CONVERSATION_KEY", "ConversationCollator"]
