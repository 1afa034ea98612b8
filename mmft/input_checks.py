"""Checks on single input values shared by the dataset pre-pass, the collator and the processor.

Kept free of `datasets` so that the processor can use them without importing the data stack.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


def text_problem(text: Any, what: str = "text") -> str | None:
    """Why `text` is unusable as model input (`None` when it is fine): not text, empty, or not valid UTF-8.

    `what` names the value in the message ("question", "caption", ...).
    """
    if text is None:
        return f"empty {what} (None)"
    if isinstance(text, (bytes, bytearray)):
        return f"{what} is bytes, not text; decode it (e.g. .decode('utf-8')) before building the dataset"
    if not isinstance(text, str):
        return f"{what} is a {type(text).__name__}, not text"
    if not text.strip():
        return f"empty {what}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates, e.g. from a mis-decoded file
        return f"{what} is not valid UTF-8 text ({error.reason} at character {error.start})"
    return None


def check_texts(texts: Sequence[Any], what: str = "text") -> list[str]:
    """The texts as a list of str, or a `ValueError` naming the first unusable one."""
    for index, text in enumerate(texts):
        problem = text_problem(text, what)
        if problem:
            raise ValueError(f"{what} {index}: {problem}")
    return list(texts)


class TruncationReporter:
    """Says (once, at WARNING; later at DEBUG) that texts longer than `max_length` tokens were cut."""

    def __init__(self, max_length: int, what: str = "question") -> None:
        self.max_length = max_length
        self.what = what
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
            "%s of %d tokens truncated to max_length=%d (%d truncated so far); raise --max_text_length to keep long "
            "texts whole",
            self.what,
            cut[0][1],
            self.max_length,
            self.truncated,
        )
