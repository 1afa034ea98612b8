"""Answer vocabulary and label encoding: top-K answers by frequency, VQAv2 soft scores or single answer ids."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from ...labels import IGNORE_INDEX  # what cross-entropy skips: rows whose answer is outside the vocabulary
from ...metrics.vqa_normalization import normalize_answer

logger = logging.getLogger(__name__)


def build_answer_vocab(answers: Iterable[Sequence[str]], top_k: int | None = None, min_count: int = 1) -> list[str]:
    """The `top_k` most frequent normalised answers (ties broken alphabetically, so the order is reproducible)."""
    counts = Counter(normalize_answer(answer) for row in answers for answer in row)
    counts.pop("", None)
    ranked = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
    vocab = ranked[:top_k] if top_k else ranked
    if len(vocab) < 2:
        raise ValueError(f"the training answers give a vocabulary of {len(vocab)} answer(s); a VQA head needs >= 2")
    return vocab


def soft_scores(answers: Sequence[str], label2id: dict[str, int]) -> torch.Tensor:
    """VQAv2 target: min(1, count/3) per answer when there are several annotators, 1.0 for a lone answer."""
    scores = torch.zeros(len(label2id))
    counts = Counter(normalize_answer(answer) for answer in answers)
    for answer, count in counts.items():
        if answer in label2id:
            scores[label2id[answer]] = 1.0 if len(answers) == 1 else min(1.0, count / 3)
    return scores


def answer_id(answers: Sequence[str], label2id: dict[str, int]) -> int:
    """The id of the single (or most common) answer, or IGNORE_INDEX when it is outside the vocabulary."""
    answer = Counter(normalize_answer(a) for a in answers).most_common(1)[0][0]
    return label2id.get(answer, IGNORE_INDEX)


def is_single_answer(answers_column: Iterable[Sequence[str]]) -> bool:
    """True when every row has exactly one answer: train with cross-entropy on ids instead of soft scores."""
    return all(len(row) == 1 for row in answers_column)


def has_known_answer(row: dict, label2id: dict[str, int]) -> bool:
    """Whether some answer of a row is in the vocabulary (a streamed row; `out_of_vocab_rows` for a loaded split)."""
    return any(normalize_answer(a) in label2id for a in row["answers"])


def out_of_vocab_rows(answers_column: Iterable[Sequence[str]], label2id: dict[str, int]) -> list[int]:
    """Indices of rows none of whose answers is in the vocabulary: they teach nothing, and can only be scored wrong."""
    return [i for i, row in enumerate(answers_column) if not any(normalize_answer(a) in label2id for a in row)]


def as_answer_list(value) -> list:
    """Answers as a list: datasets store them as a string, a list of strings, or VQAv2's [{"answer": ...}, ...]."""
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [str(value)]
    if isinstance(value, dict) and "answer" in value:  # a Sequence of dicts arrives as a dict of lists
        value = value["answer"]
    return [item["answer"] if isinstance(item, dict) else str(item) for item in value]
