"""Cheap checks run before training, so bad rows are found in seconds with their split, row, file and reason.

Every value of the task's columns is checked (`Column.problem`), and every image file is *opened* (header only:
format and size, which catches missing, empty, non-image and decompression-bomb files) but not decoded; a file that
is only broken further in (a truncated PNG) is caught when the transform decodes it. Each distinct file is opened
once, so easy-VQA's 38,575 questions on 4,000 images cost 4,000 header reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from datasets import Dataset, Image

from ..image_utils import ImageDataError, image_source, open_image
from .columns import Column
from .rejects import BadExample, BadExamplePolicy
from .sources import DataError

_CHUNK = 1024  # rows read at a time, so image bytes embedded in a big dataset never all sit in memory


def image_problem(image: dict | None, cache: dict[str, str | None]) -> tuple[str | None, str | None]:
    """(file name, reason) when an undecoded image is unusable, else (name, None); `cache` holds per-path results."""
    source, name = image_source(image)
    if source is None:
        return None, "no image"
    if isinstance(source, str):
        if source in cache:
            return name, cache[source]
        if not os.path.isfile(source):
            cache[source] = "image file not found"
            return name, cache[source]
    try:
        with open_image(source, decode=False):
            problem = None
    except ImageDataError as error:
        problem = f"cannot read image ({error})"
    if isinstance(source, str):
        cache[source] = problem
    return name, problem


def row_problem(
    image: dict | None, values: dict, columns: tuple[Column, ...], cache: dict[str, str | None]
) -> tuple[str | None, str | None]:
    """(image name, reason) when a row is unusable, else (name, None): its column values, then its image header."""
    name, problem = image_problem(image, cache)
    # A bad value is named before a bad image: it is the cheaper fix and the likelier mistake.
    return name, next((p for c in columns if (p := c.problem(values[c.name]))), None) or problem


def find_bad_rows(
    dataset: Dataset, split: str, columns: tuple[Column, ...], rows: list[int] | None = None
) -> Iterator[BadExample]:
    """Every bad row of `dataset`, in order; `rows` are the original row numbers (default 0..n-1)."""
    rows = rows if rows is not None else list(range(len(dataset)))
    names = [c.name for c in columns]
    data = dataset.select_columns(["image", *names]).cast_column("image", Image(decode=False))
    cache: dict[str, str | None] = {}
    for start in range(0, len(data), _CHUNK):
        chunk = data[start : start + _CHUNK]
        for offset, image in enumerate(chunk["image"]):
            row = rows[start + offset]
            name, problem = row_problem(image, {c.name: chunk[c.name][offset] for c in columns}, columns, cache)
            if problem:
                yield BadExample(split, row, name, problem)


def validate_split(
    dataset: Dataset, split: str, source: str, columns: tuple[Column, ...], policy: BadExamplePolicy | None = None
) -> Dataset:
    """The rows of `dataset` that pass the checks; a bad row raises `DataError` or is skipped, as `policy` says."""
    required = ["image", *(c.name for c in columns)]
    missing = [c for c in required if c not in dataset.column_names]
    if missing:  # a schema problem, never skippable row by row
        flags = "/".join(f"--{c.flag_name}" for c in columns)
        raise DataError(
            f"{source}, split {split!r}: missing column(s) {missing}; found {dataset.column_names}. "
            f"Rename them or pass --image_column/{flags}"
        )
    policy = policy or BadExamplePolicy(source=source)
    rows = dataset["row"] if "row" in dataset.column_names else None
    policy.split_sizes[split] = len(dataset)
    bad = []
    for example in find_bad_rows(dataset, split, columns, rows):
        if policy.mode == "raise":
            policy.handle(example)
        bad.append(example)
    if not bad:
        return dataset
    policy.skip_all(bad)  # logged and recorded before the fraction is judged, so the ledger is complete
    policy.check_fraction(split)
    skipped = {example.row for example in bad}
    keep = [i for i, row in enumerate(rows or range(len(dataset))) if row not in skipped]
    return dataset.select(keep)
