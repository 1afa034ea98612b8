"""Checks on single input values shared by the dataset pre-pass, the collator and the processor.

Kept free of `datasets` so that the processor can use them without importing the data stack.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

logger = logging.getLogger(__name__)


def question_problem(question: Any) -> str | None:
    """Why `question` is unusable as model input (`None` when it is fine): not text, empty, or not valid UTF-8."""
    if question is None:
        return "empty question (None)"
    if isinstance(question, (bytes, bytearray)):
        return "question is bytes, not text; decode it (e.g. .decode('utf-8')) before building the dataset"
    if not isinstance(question, str):
        return f"question is a {type(question).__name__}, not text"
    if not question.strip():
        return "empty question"
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates, e.g. from a mis-decoded file
        return f"question is not valid UTF-8 text ({error.reason} at character {error.start})"
    return None


def check_questions(questions: Sequence[Any]) -> list[str]:
    """The questions as a list of str, or a `ValueError` naming the first unusable one."""
    for index, question in enumerate(questions):
        problem = question_problem(question)
        if problem:
            raise ValueError(f"question {index}: {problem}")
    return list(questions)


class TruncationReporter:
    """Says (once, at WARNING; later at DEBUG) that questions longer than `max_length` tokens were cut."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.truncated = 0

    def check(self, tokenizer, questions: Sequence[str], attention_mask) -> None:
        # Only rows that fill max_length can have been cut; re-count just those, untruncated (rare, so cheap).
        full = [i for i, row in enumerate(attention_mask) if int(row.sum()) >= self.max_length]
        if not full:
            return
        lengths = [len(ids) for ids in tokenizer([questions[i] for i in full], truncation=False)["input_ids"]]
        cut = [(i, n) for i, n in zip(full, lengths) if n > self.max_length]
        if not cut:
            return
        self.truncated += len(cut)
        level = logging.WARNING if self.truncated == len(cut) else logging.DEBUG
        logger.log(
            level,
            "question of %d tokens truncated to max_length=%d (%d truncated so far); raise --max_question_length "
            "to keep long questions whole",
            cut[0][1], self.max_length, self.truncated,
        )  # fmt: skip
