"""Streaming readers: every split as a `datasets.IterableDataset` of canonical rows, read shard by shard.

The streaming counterpart of `mmft.data.sources` (same column mapping, same `CanonicalRows`), for data that is not
downloaded or cached whole:

- **WebDataset** shards: a folder of `<split>-*.tar` (or `<split>.tar`) files, each sample an image
  (`<key>.jpg|png|...`) and a `<key>.json` whose fields are the row's columns; read by the `webdataset` builder of
  `datasets`. Rows are named `<shard file>/<key>` in messages and in rejects.jsonl;
- anything **`load_dataset(..., streaming=True)`** reads: a Hub dataset id, a local folder of parquet/arrow files
  (or an imagefolder), columns mapped by the same flags as without streaming;
- a task's **named datasets** (easy-VQA, ...), turned into shardable streams with `to_iterable_dataset`.

Images stay undecoded (`{"bytes", "path"}`): checks open their header and the transform decodes them, on the fly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from datasets import DatasetDict, Features, Image, IterableDataset, Value, load_dataset

from .columns import Column
from .sources import CanonicalRows, DataError, SourceSpec, features_of, source_columns

ROW = "row"  # a row's name for messages: "<shard>/<key>" for WebDataset, filled in later for other sources
NAMED_SHARDS = 64  # shards of a named dataset's stream: divisible by 1, 2, 4, ... 64 processes x workers
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_TAR_SPLIT = re.compile(r"^(?P<split>[A-Za-z0-9_]+?)(?:-[^/]*)?\.tar$")


def webdataset_shards(root: Path) -> dict[str, list[str]]:
    """{split: sorted shard paths} of the `<split>-*.tar` / `<split>.tar` files directly in `root`."""
    shards: dict[str, list[str]] = {}
    for path in sorted(root.glob("*.tar")):
        match = _TAR_SPLIT.match(path.name)
        if match:
            shards.setdefault(match.group("split"), []).append(str(path))
    return shards


class WebDatasetRows:
    """`.map` function: a WebDataset sample (`<ext>` image, `json` fields, `__key__`, `__url__`) -> a flat row."""

    def __init__(self, image_fields: tuple[str, ...], image_column: str) -> None:
        self.image_fields = image_fields
        self.image_column = image_column

    def __call__(self, sample: dict) -> dict:
        image = next((sample[f] for f in self.image_fields if sample.get(f) is not None), None)
        fields = sample.get("json") or {}
        row = f"{os.path.basename(sample['__url__'])}/{sample['__key__']}"
        return {**fields, self.image_column: image, ROW: row}


def _webdataset_streams(root: Path, shards: dict[str, list[str]], image_column: str) -> dict[str, IterableDataset]:
    loaded = load_dataset("webdataset", data_files=shards, streaming=True)
    streams = {}
    for split, stream in loaded.items():
        features = stream.features or {}
        image_fields = tuple(f for f in (image_column, *IMAGE_EXTENSIONS) if isinstance(features.get(f), Image))
        if not image_fields:
            raise DataError(
                f"{root}, split {split!r}: the shards hold no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                f"fields are {sorted(features)}"
            )
        if not isinstance(features.get("json"), dict):
            raise DataError(
                f"{root}, split {split!r}: the shards hold no <key>.json files with the row's columns; "
                f"fields are {sorted(features)}"
            )
        for field in image_fields:
            stream = stream.cast_column(field, Image(decode=False))
        flat = {**features["json"], image_column: Image(decode=False), ROW: Value("string")}
        streams[split] = stream.map(
            WebDatasetRows(image_fields, image_column), remove_columns=list(features), features=Features(flat)
        )
    return streams


def canonical_stream(
    stream: IterableDataset,
    spec: SourceSpec,
    columns: tuple[Column, ...],
    column_map: dict[str, str],
    keep: tuple[str, ...],
    split: str,
) -> IterableDataset:
    """A stream's columns renamed to the canonical ones and their values made canonical, on the fly."""
    names = list(stream.features or {})
    if not names:
        raise DataError(f"dataset {spec.dataset!r}, split {split!r}: the stream does not say its columns")
    wanted = source_columns(names, spec, columns, column_map, split)
    kept = tuple(k for k in (*keep, ROW) if k in names)
    features = features_of(columns, {k: stream.features[k] for k in kept})
    features["image"] = Image(decode=False)
    if isinstance(stream.features[wanted["image"]], Image):
        stream = stream.cast_column(wanted["image"], Image(decode=False))
    return stream.map(
        CanonicalRows(wanted, columns, kept, spec.image_root), batched=True, remove_columns=names, features=features
    )


def _named_streams(splits: DatasetDict) -> dict[str, IterableDataset]:
    streams = {}
    for split, data in splits.items():
        data = data.cast_column("image", Image(decode=False))
        streams[split] = data.to_iterable_dataset(num_shards=max(1, min(NAMED_SHARDS, len(data))))
    return streams


def open_streams(
    spec: SourceSpec,
    columns: tuple[Column, ...],
    column_map: dict[str, str] | None = None,
    named: dict[str, Callable[[SourceSpec], DatasetDict]] | None = None,
    keep: tuple[str, ...] = (),
) -> dict[str, IterableDataset]:
    """{split: stream of canonical rows (undecoded `image`, the task's columns, `keep` and `row` where present)}."""
    column_map, named = column_map or {}, named or {}
    if spec.split_column:
        raise DataError(
            f"--split_column {spec.split_column} partitions a loaded dataset, which a stream is not; drop --streaming"
        )
    if spec.dataset in named:  # already canonical, with every row in the Arrow cache
        return _named_streams(named[spec.dataset](spec))
    root = Path(spec.dataset) if spec.dataset else None
    if root is not None and root.is_file():
        raise DataError(
            f"--dataset {spec.dataset} is a file; with --streaming pass a folder of <split>-*.tar "
            "WebDataset shards or parquet/arrow files, or a Hub dataset id"
        )
    shards = webdataset_shards(root) if root is not None and root.is_dir() else {}
    if shards:
        raw = _webdataset_streams(root, shards, spec.image_column)
    else:
        raw = dict(load_dataset(spec.dataset, spec.dataset_config_name, revision=spec.dataset_revision, streaming=True))
    return {split: canonical_stream(stream, spec, columns, column_map, keep, split) for split, stream in raw.items()}


__all__ = ["NAMED_SHARDS", "ROW", "canonical_stream", "open_streams", "webdataset_shards"]
