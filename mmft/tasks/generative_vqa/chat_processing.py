"""`MMFTChatProcessor`: the generative VQA processor for conversations, the decoder reading them through its chat
template.

One decoder row is `[start] [pad ...] conversation tokens`, the conversation rendered by the chat template
(`chat.py`), left-padded inside the row as `MMFTPromptProcessor` lays out its prompts, so training rows and
generation prompts share a layout; the model puts the image prefix right after `[start]`. A single question (the
pipeline, `mmft predict`) is a one-turn user conversation with the assistant's opening after it. The text tower reads
the first user turn (`chat.first_question`), as in training.

The chat template is set on the decoder tokenizer, so `save_pretrained` saves it and inference renders prompts as
training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...input_checks import check_texts
from ...labels import IGNORE_INDEX
from .chat import ASSISTANT, USER, chat_template_of, context_tokens, conversation_tokens, strip_placeholder
from .processing import DEFAULT_SEPARATOR, MMFTPromptProcessor

DEFAULT_MAX_CONVERSATION_TOKENS = 512


class MMFTChatProcessor(MMFTPromptProcessor):
    """
    `MMFTPromptProcessor` whose decoder reads conversations: `conversation_features` (training rows with labels on
    the assistant turns), `context_features` (the history before an assistant turn, to generate it from) and
    `generation_features` (one question as a one-turn conversation). `max_conversation_tokens` bounds the decoder
    tokens of a row (a longer conversation loses its end; a longer context its beginning).

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
        max_conversation_tokens: int = DEFAULT_MAX_CONVERSATION_TOKENS,
        **kwargs: Any,
    ) -> None:
        if max_conversation_tokens < 2:
            raise ValueError(f"max_conversation_tokens must be >= 2, got {max_conversation_tokens}")
        self.max_conversation_tokens = max_conversation_tokens
        super().__init__(
            image_processor,
            tokenizer,
            text_tokenizer,
            prompt,
            max_caption_tokens,
            max_question_tokens,
            separator,
            **kwargs,
        )
        if self.tokenizer is not None and not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = chat_template_of(self.tokenizer)

    def use_chat_template(self, template: str | None) -> None:
        """Render conversations with `template` (a Jinja string; None: the tokenizer's own, else mmft's default)."""
        self.tokenizer.chat_template = chat_template_of(self.tokenizer, template)

    def _left_padded(self, rows: list[list[int]], labels: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
        """`[start] [pad ...] row` per row: input_ids / attention_mask (and labels, -100 on start and padding)."""
        ids = self.caption_token_ids()
        width = 1 + max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), ids["pad"], dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        input_ids[:, 0], attention_mask[:, 0] = ids["bos"], 1
        for index, row in enumerate(rows):
            start = width - len(row)
            input_ids[index, start:] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, start:] = 1
            if labels is not None:
                targets[index, start:] = torch.tensor(labels[index], dtype=torch.long)
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        return {**features, "labels": targets} if labels is not None else features

    def conversation_features(self, conversations: Sequence[Sequence[dict[str, str]]]) -> dict[str, torch.Tensor]:
        """Training rows of chat messages (`chat.chat_messages`): input_ids / attention_mask / labels (B, 1 + T);
        labels on the assistant turns' tokens and their end tokens only."""
        start = self.caption_token_ids()["bos"]
        rows, labels = [], []
        for messages in conversations:
            ids, targets = conversation_tokens(self.tokenizer, messages, start)
            rows.append(ids[: self.max_conversation_tokens])
            labels.append(targets[: self.max_conversation_tokens])
        return self._left_padded(rows, labels)

    def context_features(self, contexts: Sequence[Sequence[dict[str, str]]]) -> dict[str, torch.Tensor]:
        """The decoder's prompt per row to generate the next assistant turn from (the history, then the assistant's
        opening): input_ids / attention_mask (B, 1 + C); the answer starts at 1 + C in every row."""
        start = self.caption_token_ids()["bos"]
        rows = [
            context_tokens(self.tokenizer, messages, start)[-self.max_conversation_tokens :] for messages in contexts
        ]
        return self._left_padded(rows)

    def question_features(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """The text tower reads each question without LLaVA's `<image>` token."""
        return super().question_features([strip_placeholder(q) for q in check_texts(questions, "question")])

    def generation_features(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """One question per row as a one-turn user conversation, with the assistant's opening after it."""
        questions = check_texts(questions, "question")
        return self.context_features([[{"role": USER, "content": strip_placeholder(q)}] for q in questions])

    def answer_features(self, questions: Sequence[str], answers: Sequence[str]) -> dict[str, torch.Tensor]:
        """A question and its answer per row as a two-turn conversation (labels on the answer and its end token)."""
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        pairs = zip(check_texts(questions, "question"), check_texts(answers, "answer"))
        return self.conversation_features(
            [[{"role": USER, "content": strip_placeholder(q)}, {"role": ASSISTANT, "content": a}] for q, a in pairs]
        )


__all__ = ["DEFAULT_MAX_CONVERSATION_TOKENS", "MMFTChatProcessor"]
