"""Where rows come from: a task's named datasets, a local imagefolder or table folder, or a Hub dataset.

Every reader ends with a `DatasetDict` whose splits have `image` (an `Image` feature) and the task's canonical
columns (`mmft.data.columns`); `validate_split` then checks them cheaply before training. The generic readers:

- an **imagefolder**: `<split>/metadata.jsonl` (or `metadata.csv`) with a `file_name` per row, images beside it;
- a **table folder**: `<split>.jsonl` / `<split>.csv` whose image column holds paths relative to the folder;
- anything **`datasets.load_dataset`** reads (a Hub id, a folder of parquet/arrow files), columns mapped by flags;
  `--dataset_config_name` / `--dataset_revision` pick its configuration and version.

Relative image paths (a table's, or a Hub/parquet string column's) resolve against `--image_root` (default for a local
table: its own folder). Which rows make the train, validation and test splits is `mmft.data.splits`.

A task adds its own formats (easy-VQA, VQAv2 JSON, COCO captions) as named readers in its `datasets` registry.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, Image, Value, load_dataset

from .columns import Column

DEFAULT_VALIDATION_PERCENTAGE = 10.0  # carved from train when a run evaluates during training and the data has none
TABLE_SUFFIXES = (".jsonl", ".csv")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
IMAGE_KEYS = ("file_name", "image", "image_path", "path")  # where a table row may name its image file


class DataError(ValueError):
    """A problem with the user's data, with the file/row/column it was found in and what to do."""


@dataclass
class SourceSpec:
    """Which dataset and which of its splits; the recipe's `DataArguments` extend it (one definition of each field)."""

    dataset: str | None = field(
        default=None,
        metadata={
            "help": "a name the task knows (e.g. easy_vqa), a local folder (imagefolder or <split>.jsonl/.csv "
            "tables), or a Hub dataset id; default: the task's offline dataset"
        },
    )
    train_split: str = "train"
    eval_split: str | None = field(
        default=None,
        metadata={
            "help": "the split scored once at the end, on the selected model (test_* metrics); default: 'test', "
            "else (a run that never evaluates during training) the validation split, else carved from train"
        },
    )
    image_column: str = field(default="image", metadata={"help": "the image column of a Hub dataset or table"})
    streaming: bool = field(
        default=False,
        metadata={
            "help": "read training rows as a stream (Hub ids, parquet/arrow folders, WebDataset "
            "<split>-*.tar shards, the task's named datasets): nothing is downloaded or cached whole, each "
            "process reads its own shards; needs --max_steps (see docs/streaming.md)"
        },
    )
    streaming_head_rows: int = field(
        default=10000,
        metadata={
            "help": "with --streaming: training rows read first to fix the label/answer "
            "vocabulary (--class_names or a checkpoint's labels fix it instead)"
        },
    )
    streaming_shuffle_buffer: int = field(
        default=0,
        metadata={
            "help": "with --streaming: shuffle rows through a buffer of this many per process (0: "
            "shard order only; a resumed run loses the rows that sat in the buffer)"
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "the configuration (subset) of a Hub dataset: load_dataset(dataset, name)"}
    )
    dataset_revision: str | None = field(
        default=None, metadata={"help": "the branch, tag or commit of a Hub dataset (default: its main branch)"}
    )
    image_root: str | None = field(
        default=None,
        metadata={
            "help": "folder that relative image paths of a table or a Hub/parquet dataset's string image column "
            "resolve against (default for a local table folder: that folder)"
        },
    )
    split_column: str | None = field(
        default=None,
        metadata={
            "help": "a column naming each row's split (e.g. Flickr30k's 'split': train/val/test): the loaded rows "
            "are partitioned by its values, which then name the splits --train_split/--eval_split choose from"
        },
    )
    validation_split: str | None = field(
        default=None,
        metadata={
            "help": "the split evaluated during training, for model selection (eval_* metrics); default: the "
            "first of validation/val/valid/dev present, else carved from train when the run evaluates"
        },
    )
    validation_split_percentage: float | None = field(
        default=None,
        metadata={
            "help": "percent of the training images carved out as the validation split when the data has "
            f"none (and as the test split when it has no test split either); grouped by image, fixed by --seed. "
            f"Default: {DEFAULT_VALIDATION_PERCENTAGE:g} when the run evaluates during training, else no carving"
        },
    )


# A named reader: (spec, the task's arguments) -> DatasetDict with `image` and the task's canonical columns.
Reader = Callable[[SourceSpec, Any], DatasetDict]


def features_of(columns: tuple[Column, ...], extra: dict[str, Any] | None = None) -> Features:
    return Features({"image": Image(), **{c.name: c.feature() for c in columns}, **(extra or {})})


# -- local files ----------------------------------------------------------------------------------------------------
def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) of a JSON-lines file, with errors naming the file and line."""
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}, line {line_number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column "
                    f"{error.start + 1}); re-save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}")
            yield line_number, record


def _csv_records(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            for record in reader:
                yield reader.line_num, record
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason}); re-save the file as UTF-8") from None


def read_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) of a JSON-lines or CSV file (the CSV header is line 1)."""
    return _csv_records(path) if path.suffix == ".csv" else _jsonl_records(path)


def _pick(record: dict, keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if key in record:
            return key, record[key]
    return None, None


def read_table(
    path: Path,
    base: Path,
    columns: tuple[Column, ...],
    column_map: dict[str, str],
    image_keys: tuple[str, ...],
    extra: tuple[str, ...] = (),
) -> Dataset:
    """A table of rows (JSON lines or CSV) naming image files relative to `base`, as a dataset of canonical rows;
    `extra` names fields every row must have, carried along as strings (e.g. the `--split_column`)."""
    rows: dict[str, list] = {"image": [], **{c.name: [] for c in columns}, **{name: [] for name in extra}}
    for line_number, record in read_records(path):
        where = f"{path}, line {line_number}"
        image_key, image = _pick(record, image_keys)
        if image_key is None:
            raise DataError(f"{where}: missing field {image_keys[0]!r} (the image file, relative to {base})")
        for column in columns:
            keys = (column_map[column.name],) if column.name in column_map else column.record_keys
            key, value = _pick(record, keys)
            if key is None:
                alternatives = " or ".join(repr(k) for k in keys)
                raise DataError(f"{where}: missing field {alternatives}")
            value = column.canonical(value)
            for text in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
                if isinstance(text, str) and _surrogates(text):  # Arrow cannot even store such a string
                    raise DataError(f"{where}: {column.what} is not valid UTF-8 text (lone surrogate); fix the file")
            rows[column.name].append(value)
        for name in extra:
            if record.get(name) is None:
                raise DataError(f"{where}: missing field {name!r}")
            rows[name].append(str(record[name]))
        rows["image"].append(str(base / image) if isinstance(image, str) and not os.path.isabs(image) else image)
    return Dataset.from_dict(rows, features=features_of(columns, {name: Value("string") for name in extra}))


def _surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _metadata_file(folder: Path) -> Path | None:
    return next((folder / name for name in METADATA_FILES if (folder / name).is_file()), None)


def local_splits(root: Path) -> dict[str, tuple[Path, Path]] | None:
    """{split: (table, image base folder)} of an imagefolder or a table folder, or None if `root` is neither."""
    if not root.is_dir():
        return None
    found = {p.name: (meta, p) for p in sorted(root.iterdir()) if p.is_dir() and (meta := _metadata_file(p))}
    if not found and (meta := _metadata_file(root)):
        found = {"train": (meta, root)}
    if not found:
        found = {p.stem: (p, root) for p in sorted(root.iterdir()) if p.suffix in TABLE_SUFFIXES and p.is_file()}
    return found or None


def load_local(
    root: Path,
    columns: tuple[Column, ...],
    column_map: dict[str, str],
    image_column: str,
    image_root: str | None = None,
    extra: tuple[str, ...] = (),
) -> DatasetDict:
    """An imagefolder (`<split>/metadata.jsonl`) or table folder (`<split>.jsonl|csv`) read row by row; relative image
    paths resolve against `image_root`, else the table's folder.

    Read here rather than through `load_dataset("imagefolder")` so that a bad line is reported with its file and
    line number instead of being dropped or failing deep inside the builder.
    """
    splits = local_splits(root)
    if not splits:
        raise DataError(
            f"{root}: expected <split>/metadata.jsonl (e.g. train/, test/), a metadata.jsonl, or <split>.jsonl / "
            "<split>.csv tables"
        )
    image_keys = (image_column, *(k for k in IMAGE_KEYS if k != image_column))
    return DatasetDict(
        {
            split: read_table(table, Path(image_root) if image_root else base, columns, column_map, image_keys, extra)
            for split, (table, base) in splits.items()
        }
    )


# -- Hub (and anything load_dataset reads) --------------------------------------------------------------------------
def source_columns(
    names: list[str], spec: SourceSpec, columns: tuple[Column, ...], column_map: dict[str, str], split: str
) -> dict[str, str]:
    """{canonical column: source column} of a split with columns `names`: an explicit mapping, else the first
    accepted key the split has; a `DataError` naming the flags when one is missing."""
    flags = {"image": "image_column", **{c.name: c.flag_name for c in columns}}
    wanted = {"image": spec.image_column}
    for column in columns:
        keys = (column_map[column.name],) if column.name in column_map else column.record_keys
        wanted[column.name] = next((k for k in keys if k in names), keys[0])
    for name, source in wanted.items():
        if source not in names:
            raise DataError(
                f"dataset {spec.dataset!r}, split {split!r}: no column {source!r} (the {name} column); columns "
                f"are {names}; map them with --{flags[name]}" + "".join(f"/--{flags[n]}" for n in wanted if n != name)
            )
    return wanted


class CanonicalRows:
    """`.map(batched=True)` function: a batch of source rows -> canonical columns (plus the `keep` ones present)."""

    def __init__(
        self, wanted: dict[str, str], columns: tuple[Column, ...], keep: tuple[str, ...], image_root: str | None = None
    ) -> None:
        self.wanted, self.keep, self.image_root = wanted, keep, image_root
        self.by_column = {c.name: c for c in columns}

    def _image(self, image: Any) -> Any:
        """An image given by a relative path (a string, or an undecoded image without bytes), under `image_root`."""
        if self.image_root is None:
            return image
        if isinstance(image, str) and not os.path.isabs(image):
            return os.path.join(self.image_root, image)
        if isinstance(image, dict) and image.get("bytes") is None and image.get("path"):
            if not os.path.isabs(image["path"]):
                return {**image, "path": os.path.join(self.image_root, image["path"])}
        return image

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {
            name: [self.by_column[name].canonical(v) for v in batch[source]]
            for name, source in self.wanted.items()
            if name != "image"
        }
        images = [self._image(image) for image in batch[self.wanted["image"]]]
        return {"image": images, **out, **{k: batch[k] for k in self.keep if k in batch}}


def load_hub(
    spec: SourceSpec, columns: tuple[Column, ...], column_map: dict[str, str], keep: tuple[str, ...] = ()
) -> DatasetDict:
    """A `load_dataset` dataset, its columns renamed to the canonical ones and their values made canonical."""
    loaded = load_dataset(spec.dataset, spec.dataset_config_name, revision=spec.dataset_revision)
    renamed = {}
    for split, data in loaded.items():
        wanted = source_columns(data.column_names, spec, columns, column_map, split)
        data = data.select_columns([*dict.fromkeys(wanted.values()), *(k for k in keep if k in data.column_names)])
        features = features_of(columns, {k: data.features[k] for k in keep if k in data.column_names})
        data = data.cast_column(spec.image_column, Image(decode=False))
        renamed[split] = data.map(
            CanonicalRows(wanted, columns, keep, spec.image_root),
            batched=True,
            remove_columns=data.column_names,
            features=_undecoded(features),
        )
        renamed[split] = renamed[split].cast_column("image", Image())
    return DatasetDict(renamed)


def _undecoded(features: Features) -> Features:
    return Features({**features, "image": Image(decode=False)})


__all__ = [
    "CanonicalRows",
    "DataError",
    "SourceSpec",
    "features_of",
    "load_hub",
    "load_local",
    "read_records",
    "read_table",
    "source_columns",
]
