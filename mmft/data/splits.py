"""Which rows train, select and test: the splits of a dataset (`mmft.data.sources` reads them), chosen and carved.

`read_splits` reads every split of `--dataset` (partitioned by `--split_column` first, when given); `choose_splits`
names the split for each role (`--train_split`, `--validation_split`, `--eval_split`); `resolve_splits` carves the
roles the data lacks from train, grouped by image (`image_key`: rows of one image file, or of the same image bytes,
stay on one side) and fixed by the seed; `load_splits` does the three.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from datasets import Dataset, DatasetDict, Image, concatenate_datasets

from .columns import Column
from .sources import DEFAULT_VALIDATION_PERCENTAGE, DataError, SourceSpec, load_hub, load_local, local_splits

logger = logging.getLogger("mmft.data")
TEST_SPLIT_NAMES = ("test",)
VALIDATION_SPLIT_NAMES = ("validation", "val", "valid", "dev")


class SplitChoice(NamedTuple):
    """Split names for each role; None: carved from the training split (`carve`), or (validation) none at all."""

    train: str
    validation: str | None
    test: str | None
    carve_validation: bool  # whether a validation split is carved from train


class Splits(NamedTuple):
    """The rows of each role: training, validation (model selection; None: the run has none) and test (scored once
    at the end)."""

    train: Dataset
    validation: Dataset | None
    test: Dataset


def _missing_split(spec: SourceSpec, role: str, split: str, flag: str, available) -> DataError:
    return DataError(
        f"dataset {spec.dataset!r} has no {role} split {split!r}; available splits: {sorted(available)}. Name "
        f"another with --{flag}"
    )


def choose_splits(spec: SourceSpec, available, validation: bool = False) -> SplitChoice:
    """Which split plays which role. `validation`: whether the run evaluates during training (then it needs a
    validation split, carved from train when the data has none); an explicit --validation_split_percentage asks
    for one too. Without a test split the validation split is scored at the end when the run never evaluates during
    training (nothing was selected on it); else the test split is carved from train."""
    if spec.train_split not in available:
        raise _missing_split(spec, "train", spec.train_split, "train_split", available)
    for role, split, flag in (
        ("test", spec.eval_split, "eval_split"),
        ("validation", spec.validation_split, "validation_split"),
    ):
        if split is not None and split not in available:
            raise _missing_split(spec, role, split, flag, available)
    for other, role in ((spec.eval_split, "test"), (spec.train_split, "train")):
        if spec.validation_split is not None and spec.validation_split == other:
            raise DataError(
                f"--validation_split {other!r} is also the {role} split: model selection needs rows of its own"
            )
    percentage = spec.validation_split_percentage
    if percentage is not None and not 0 < percentage < 50:
        raise DataError(f"--validation_split_percentage must be above 0 and below 50, got {percentage:g}")
    wanted = validation or percentage is not None
    named_validation = next((s for s in VALIDATION_SPLIT_NAMES if s in available and s != spec.train_split), None)
    test = spec.eval_split or next((s for s in TEST_SPLIT_NAMES if s in available and s != spec.train_split), None)
    if test is None and not wanted and spec.validation_split is None:
        test = named_validation  # nothing is selected on it, so it can be the scored split (as before validation)
    chosen = spec.validation_split or (named_validation if named_validation != test else None)
    if chosen is None and wanted:
        return SplitChoice(spec.train_split, None, test, True)
    return SplitChoice(spec.train_split, chosen, test, False)


def image_key(image: dict | None) -> str | None:
    """What identifies an undecoded image `{"bytes", "path"}` (None: nothing does): a hash of its bytes where it holds
    them (beside embedded bytes a path is only a name, which a Hub dataset may repeat or leave out), else its
    normalised path. Caption grouping and split carving both go by it."""
    if not isinstance(image, dict):
        return None
    if image.get("bytes") is not None:
        return "sha256:" + hashlib.sha256(image["bytes"]).hexdigest()
    return "path:" + os.path.normpath(os.path.abspath(image["path"])) if image.get("path") else None


def image_keys(dataset: Dataset, batch_size: int = 1000) -> list[str]:
    """One key per row naming its image (`image_key`); a row without an image is a group of its own."""
    images = dataset.select_columns(["image"]).cast_column("image", Image(decode=False))
    keys = []
    for batch in images.iter(batch_size=batch_size):
        for image in batch["image"]:
            keys.append(image_key(image) or f"row:{len(keys)}")
    return keys


def carve(dataset: Dataset, fractions: Sequence[float], seed: int, keys: Sequence[str] | None = None) -> list[Dataset]:
    """`dataset` cut into len(fractions) + 1 parts: one per fraction (of the images, at least one image each),
    then the rest, each part keeping the original row order. Rows with the same key (`image_keys`: the same image
    file) land in the same part, so no image is in two; the groups are ordered by a hash of (seed, key), so the cut
    depends on the seed and the images only, not on row order or the process."""
    keys = list(keys) if keys is not None else image_keys(dataset)
    groups = sorted(set(keys), key=lambda key: hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest())
    if len(groups) <= len(fractions):
        raise DataError(f"cannot carve {len(fractions)} split(s) from {len(groups)} image(s): too few images")
    part_of, start = {}, 0
    for part, fraction in enumerate(fractions):
        count = max(1, math.ceil(fraction * len(groups)))
        part_of.update((key, part) for key in groups[start : start + count])
        start += count
    if start >= len(groups):
        raise DataError(f"carving {[f'{f:.0%}' for f in fractions]} of {len(groups)} image(s) leaves none to train on")
    rows: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for index, key in enumerate(keys):
        rows[part_of.get(key, len(fractions))].append(index)
    return [dataset.select(indices) for indices in rows]


def resolve_splits(spec: SourceSpec, splits, choice: SplitChoice, seed: int) -> Splits:
    """The chosen splits, with those the choice leaves to carving cut from train (`carve`) and said in the log."""
    train = splits[choice.train]
    carved = [
        role for role, missing in (("test", choice.test is None), ("validation", choice.carve_validation)) if missing
    ]
    if not carved:
        validation = splits[choice.validation] if choice.validation else None
        return Splits(train, validation, splits[choice.test])
    percentage = spec.validation_split_percentage or DEFAULT_VALIDATION_PERCENTAGE
    *parts, train = carve(train, [percentage / 100] * len(carved), seed)
    cut = dict(zip(carved, parts))
    logger.warning(
        "mmft: dataset %r has no %s split: carved %s from its %r split (%g%% of its images each, grouped by image so "
        "that no image is in two splits, fixed by --seed %d); %d training rows remain",
        spec.dataset,
        " or ".join(carved),
        " and ".join(f"{role} ({len(cut[role])} rows)" for role in carved),
        choice.train,
        percentage,
        seed,
        len(train),
    )
    validation = cut.get("validation", splits[choice.validation] if choice.validation else None)
    return Splits(train, validation, cut.get("test", splits[choice.test] if choice.test else None))


# -- entry point ----------------------------------------------------------------------------------------------------
def load_splits(
    spec: SourceSpec,
    columns: tuple[Column, ...],
    column_map: dict[str, str] | None = None,
    named: dict[str, Callable[[SourceSpec], DatasetDict]] | None = None,
    keep: tuple[str, ...] = (),
    validation: bool = False,
    seed: int = 42,
) -> Splits:
    """(train, validation, test) splits of `spec.dataset`: a name in `named`, a local imagefolder / table folder,
    or anything `datasets.load_dataset` reads. `keep` names optional extra columns to carry along (e.g.
    `question_type`). `validation`: whether the run evaluates during training (`choose_splits`); `seed` fixes what
    is carved from train."""
    splits = read_splits(spec, columns, column_map, named, keep)
    return resolve_splits(spec, splits, choose_splits(spec, splits, validation), seed)


def read_splits(
    spec: SourceSpec,
    columns: tuple[Column, ...],
    column_map: dict[str, str] | None = None,
    named: dict[str, Callable[[SourceSpec], DatasetDict]] | None = None,
    keep: tuple[str, ...] = (),
) -> DatasetDict:
    """Every split of `spec.dataset` (see `load_splits`), before any is chosen."""
    column_map = column_map or {}
    named = named or {}
    by_split = (spec.split_column,) if spec.split_column else ()
    if spec.dataset in named:
        splits = named[spec.dataset](spec)
    elif spec.dataset and os.path.isdir(spec.dataset) and local_splits(Path(spec.dataset)):
        splits = load_local(Path(spec.dataset), columns, column_map, spec.image_column, spec.image_root, by_split)
    elif spec.dataset and os.path.isfile(spec.dataset):
        raise DataError(
            f"--dataset {spec.dataset} is a file; pass the folder holding <split>.jsonl / <split>.csv files "
            "(e.g. train.jsonl and test.jsonl), or an imagefolder"
        )
    else:
        splits = load_hub(spec, columns, column_map, (*keep, *by_split))
    if spec.split_column:
        splits = partition_by_column(splits, spec.split_column, spec.dataset)
    return splits


def partition_by_column(splits: DatasetDict, column: str, source: str | None) -> DatasetDict:
    """The rows of every split (in order) partitioned by their `column` value, which names the new split; the column
    is dropped. E.g. Flickr30k on the Hub: one `test` split whose `split` column says train / val / test per row."""
    for split, data in splits.items():
        if column not in data.column_names:
            raise DataError(
                f"dataset {source!r}, split {split!r}: no column {column!r} (--split_column); columns are "
                f"{data.column_names}"
            )
    rows = concatenate_datasets(list(splits.values())) if len(splits) > 1 else next(iter(splits.values()))
    members: dict[str, list[int]] = {}
    for index, value in enumerate(rows[column]):
        if value is None or str(value).strip() == "":
            raise DataError(f"dataset {source!r}: row {index} has no {column!r} value (--split_column)")
        members.setdefault(str(value), []).append(index)
    rows = rows.remove_columns(column)
    return DatasetDict({value: rows.select(indices) for value, indices in members.items()})


__all__ = [
    "SplitChoice",
    "Splits",
    "TEST_SPLIT_NAMES",
    "VALIDATION_SPLIT_NAMES",
    "carve",
    "choose_splits",
    "image_key",
    "image_keys",
    "load_splits",
    "partition_by_column",
    "read_splits",
    "resolve_splits",
]
