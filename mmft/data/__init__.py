"""Data shared by every task: sources, column kinds, validation, the bad-example policy, transform and collator.

What is task-specific (answer vocabularies, labels, named datasets) lives with the task in `mmft.tasks`.
"""

from __future__ import annotations

from .collator import ImageTextCollator, ImageTextTransform, decode_image, excluded_eval_positions
from .columns import LABELS, TEXT, TEXTS, Column
from .easy_vqa import load_easy_vqa
from .rejects import BadExample, BadExamplePolicy
from .sources import DataError, SourceSpec
from .splits import load_splits
from .validation import validate_split

__all__ = [
    "BadExample",
    "BadExamplePolicy",
    "Column",
    "DataError",
    "ImageTextCollator",
    "ImageTextTransform",
    "LABELS",
    "SourceSpec",
    "TEXT",
    "TEXTS",
    "decode_image",
    "excluded_eval_positions",
    "load_easy_vqa",
    "load_splits",
    "validate_split",
]
