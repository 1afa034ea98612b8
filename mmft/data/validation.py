"""Cheap checks run before training, so bad rows fail in seconds with their file, row and column named."""

from __future__ import annotations

import os

from datasets import Dataset, Image

from .sources import DataError

REQUIRED_COLUMNS = ("image", "question", "answers")


def validate_split(dataset: Dataset, split: str, source: str) -> None:
    """Raise `DataError` at the first missing column, empty question, empty answers or missing image file."""
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DataError(
            f"{source}, split {split!r}: missing column(s) {missing}; found {dataset.column_names}. "
            "Rename them or pass --image_column/--question_column/--answers_column"
        )
    for row, question in enumerate(dataset["question"]):
        if question is None or not str(question).strip():
            raise DataError(f"{source}, split {split!r}, row {row}: empty question; fix or drop the row")
    for row, answers in enumerate(dataset["answers"]):
        if not answers:
            raise DataError(f"{source}, split {split!r}, row {row}: 'answers' is empty; every question needs >= 1 answer")
    images = dataset.cast_column("image", Image(decode=False))["image"]
    for row, image in enumerate(images):
        if image is None:
            raise DataError(f"{source}, split {split!r}, row {row}: no image")
        if image.get("bytes") is None and not os.path.isfile(image.get("path") or ""):
            raise DataError(f"{source}, split {split!r}, row {row}: image file not found: {image.get('path')}")
