"""The splits as a run reads them: loaded (`mmft.data.splits`), limited, each row numbered, checked before training
(`mmft.data.validation`), images left undecoded for the transform."""

from __future__ import annotations

from collections.abc import Callable

from datasets import Dataset, DatasetDict, Image

from .columns import Column
from .rejects import BadExamplePolicy
from .sources import SourceSpec
from .splits import Splits, load_splits
from .validation import validate_split


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def prepare_splits(
    spec: SourceSpec,
    columns: tuple[Column, ...],
    column_map: dict[str, str] | None = None,
    named: dict[str, Callable[[SourceSpec], DatasetDict]] | None = None,
    keep: tuple[str, ...] = (),
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    policy: BadExamplePolicy | None = None,
    validation: bool = False,
    seed: int = 42,
) -> Splits:
    """Load (carving what `load_splits` carves), limit and validate (train, validation, test); each row keeps its
    number in its split in `row`, for messages. `max_eval_samples` bounds validation and test alike.

    Images stay undecoded: the transform decodes them, so a bad file is reported with its path and row.
    """
    policy = policy or BadExamplePolicy(source=spec.dataset or "dataset")
    loaded = load_splits(spec, columns, column_map, named, keep, validation, seed)
    names = {"train": "train", "validation": "validation", "test": "eval"}  # split names in messages and rejects
    prepared = {}
    for role, data in loaded._asdict().items():
        limit = max_train_samples if role == "train" else max_eval_samples
        prepared[role] = (
            None if data is None else checked_split(data, names[role], spec.dataset, columns, policy, limit)
        )
    return Splits(**prepared)


def checked_split(
    data: Dataset,
    role: str,
    source: str | None,
    columns: tuple[Column, ...],
    policy: BadExamplePolicy,
    limit: int | None = None,
) -> Dataset:
    """One loaded split limited to `limit` rows, numbered (`row`), validated as `role` ("train" or "eval"), with
    its images undecoded."""
    data = _limit(data, limit)
    data = validate_split(data.add_column("row", list(range(len(data)))), role, source, columns, policy)
    return data.cast_column("image", Image(decode=False))


__all__ = ["checked_split", "prepare_splits"]
