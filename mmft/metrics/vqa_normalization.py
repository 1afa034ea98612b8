"""Pure-Python VQA answer normalisation and accuracy (Antol et al. 2015; Goyal et al. 2017).

This module is the single home of the VQA accuracy logic. It has no third-party
dependencies so it can be imported by tests and by training code without
``evaluate``; the ``evaluate`` metric script in ``vqa_accuracy/`` is a thin
wrapper around :func:`compute_vqa_accuracy`.

The rules follow the behaviour of the official VQA evaluation script, written
from its description:

* lowercase, newline/tab -> space, strip;
* punctuation: a punctuation character that touches whitespace (or any
  punctuation when the text contains a digit-comma-digit group such as
  ``1,000``) is deleted, otherwise it is replaced by a space (so ``t-shirt``
  becomes ``t shirt``);
* a period is deleted unless a digit follows it, so ``2.5`` survives. The
  official regex intends "not between digits" but its look-behind is malformed,
  so "not followed by a digit" is what it actually does -- we match that;
* number words ``none``/``zero``..``ten`` -> digits, articles dropped,
  apostrophe-less contractions restored (``dont`` -> ``don't``).

Deliberate deviation: the official script skips normalisation when all ground
truth answers agree (its annotations are pre-normalised). We always normalise
both sides, which gives the same result on the official annotations and a
sensible one on datasets whose answers are not pre-normalised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = [
    "CONTRACTIONS",
    "compute_vqa_accuracy",
    "normalize_answer",
    "sanitize_key",
    "vqa_score",
]

# A ground-truth answer counts fully once this many annotators gave it.
_FULL_CREDIT_VOTES = 3

_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")

_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})

# Canonical spellings; the lookup key is the same word with apostrophes removed,
# which is how annotators and models usually (mis)type them. Words whose
# apostrophe-less form is a real English word ("its", "were", "well", "ill",
# "id", "shell", "hell", "wed") are left out on purpose so they are not mangled.
_CANONICAL_CONTRACTIONS = (
    "ain't",
    "aren't",
    "can't",
    "could've",
    "couldn't",
    "couldn't've",
    "didn't",
    "doesn't",
    "don't",
    "hadn't",
    "hasn't",
    "haven't",
    "he'd",
    "he's",
    "how'd",
    "how'll",
    "how's",
    "i'm",
    "i've",
    "isn't",
    "it'd",
    "it'll",
    "let's",
    "ma'am",
    "mightn't",
    "might've",
    "mustn't",
    "must've",
    "needn't",
    "o'clock",
    "shan't",
    "she's",
    "should've",
    "shouldn't",
    "shouldn't've",
    "somebody's",
    "someone's",
    "something's",
    "that's",
    "there's",
    "there're",
    "they'd",
    "they'll",
    "they're",
    "they've",
    "wasn't",
    "we've",
    "weren't",
    "what'll",
    "what're",
    "what's",
    "what've",
    "when's",
    "where'd",
    "where's",
    "where've",
    "who'd",
    "who'll",
    "who's",
    "who've",
    "why'll",
    "why's",
    "won't",
    "would've",
    "wouldn't",
    "wouldn't've",
    "y'all",
    "you'd",
    "you'll",
    "you're",
    "you've",
)
CONTRACTIONS: Mapping[str, str] = {c.replace("'", ""): c for c in _CANONICAL_CONTRACTIONS}


def _strip_punctuation(text: str) -> str:
    """Apply the official punctuation rule (see module docstring)."""
    # Decisions look at the original text, not the partially cleaned one,
    # exactly like the reference implementation.
    delete_all = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for char in _PUNCTUATION:
        if char not in out:
            continue
        touches_space = f"{char} " in text or f" {char}" in text
        # Punctuation glued inside a token separates words ("t-shirt"), so it
        # becomes a space; next to whitespace it is redundant and just goes.
        out = out.replace(char, "" if (touches_space or delete_all) else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def _normalize_words(text: str) -> str:
    """Map number words to digits, drop articles and restore contractions."""
    words = (_NUMBER_WORDS.get(word, word) for word in text.split())
    kept = (word for word in words if word not in _ARTICLES)
    return " ".join(CONTRACTIONS.get(word, word) for word in kept)


def normalize_answer(text: str) -> str:
    """Normalise a VQA answer the way the official evaluation does.

    >>> normalize_answer("Two dogs.")
    '2 dogs'
    >>> normalize_answer("1,000")
    '1000'
    """
    text = text.lower().replace("\n", " ").replace("\t", " ").strip()
    return _normalize_words(_strip_punctuation(text))


def vqa_score(prediction: str, references: Sequence[str]) -> float:
    """Accuracy of one prediction against the ground-truth answers of one question.

    With N >= 2 references it averages ``min(1, matches / 3)`` over the N
    leave-one-out subsets of N - 1 answers (the official formula for N = 10);
    with a single reference it is exact match after normalisation.
    """
    if isinstance(references, str):
        # A bare string is a Sequence[str] of characters: refuse the silent bug.
        raise TypeError("references must be a sequence of answer strings, not a single string")
    if not references:
        raise ValueError("each question needs at least one reference answer")
    answer = normalize_answer(prediction)
    hits = [normalize_answer(ref) == answer for ref in references]
    if len(hits) == 1:
        return float(hits[0])
    total_hits = sum(hits)
    # Leaving out answer i removes its own vote from the count.
    per_subset = (min(1.0, (total_hits - hit) / _FULL_CREDIT_VOTES) for hit in hits)
    return sum(per_subset) / len(hits)


def sanitize_key(name: str) -> str:
    """Make a question type usable in a result key: non-alphanumerics -> ``_``."""
    return re.sub(r"[^0-9A-Za-z]", "_", name)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def compute_vqa_accuracy(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    question_types: Sequence[str] | None = None,
    answer_types: Sequence[str] | None = None,
) -> dict[str, float]:
    """Mean VQA accuracy, plus ``accuracy_<type>`` per question type and
    ``accuracy_answer_type_<type>`` per answer type (VQAv2's ``yes/no``,
    ``number``, ``other``) if given.

    Types that sanitise to the same key (``yes/no`` and ``yes-no``) are pooled,
    since they would otherwise overwrite each other.
    """
    if len(predictions) == 0:
        raise ValueError("no predictions to score")
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} reference lists")
    for name, types in (("question", question_types), ("answer", answer_types)):
        if types is not None and len(types) != len(predictions):
            raise ValueError(f"got {len(predictions)} predictions but {len(types)} {name} types")

    scores = [vqa_score(pred, refs) for pred, refs in zip(predictions, references)]
    result = {"accuracy": _mean(scores)}
    for prefix, types in (("accuracy_", question_types), ("accuracy_answer_type_", answer_types)):
        if types is None:
            continue
        by_type: dict[str, list[float]] = {}
        for kind, score in zip(types, scores):
            by_type.setdefault(f"{prefix}{sanitize_key(kind)}", []).append(score)
        result.update({key: _mean(values) for key, values in by_type.items()})
    return result
