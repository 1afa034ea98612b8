"""Image-caption data shared by the retrieval and captioning tasks: the `captions` column and the caption formats.

Rows are `image` + `captions` (one or more strings). Sources, besides the generic ones of `mmft.data.sources`
(an imagefolder whose `metadata.jsonl` rows carry `captions` or `caption`; a Hub dataset mapped with
`--caption_column`, e.g. the Flickr30k layout):

- **COCO / Karpathy-split JSON** (`--dataset coco_json --captions_file dataset_coco.json --image_dir ...`): the
  `dataset_coco.json` / `dataset_flickr30k.json` layout (`images` with `filepath`, `filename`, `split` and
  `sentences`; `restval` joins `train`), or COCO's own `captions_*.json` (`images` + `annotations`), one file per
  split (`--captions_file` for train, `--eval_captions_file` for eval).
- **scenes** (`--dataset scenes`): the synthetic offline demo data of `mmft.data.scenes`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict

from .columns import TEXTS, Column
from .sources import DataError, features_of

CAPTIONS = Column("captions", TEXTS, keys=("captions", "caption"), flag="caption_column", noun="caption")
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "validation", "test": "test"}


@dataclass
class CaptionDataArguments:
    """Flags of the caption tasks' data: the caption column, and COCO / Karpathy JSON files."""

    caption_column: str | None = field(
        default=None, metadata={"help": "caption column of a Hub dataset or table (default: captions/caption)"}
    )
    captions_file: str | None = field(
        default=None, metadata={"help": "--dataset coco_json: a Karpathy-split JSON, or COCO's captions_train.json"}
    )
    eval_captions_file: str | None = field(
        default=None, metadata={"help": "COCO's captions_val.json (Karpathy files hold every split already)"}
    )
    image_dir: str | None = field(default=None, metadata={"help": "--dataset coco_json: the folder of the images"})


def _image_path(image_dir: Path, entry: dict, where: str) -> str:
    name = entry.get("filename") or entry.get("file_name")
    if not name:
        raise DataError(f"{where}: no 'filename' / 'file_name'")
    return str(image_dir / entry.get("filepath", "") / name)


def _karpathy(data: dict, path: str, image_dir: Path) -> dict[str, dict[str, list]]:
    splits: dict[str, dict[str, list]] = defaultdict(lambda: {"image": [], "captions": []})
    for index, entry in enumerate(data["images"]):
        where = f"{path}, images[{index}]"
        split = KARPATHY_SPLITS.get(entry.get("split", "train"))
        if split is None:
            raise DataError(f"{where}: unknown split {entry.get('split')!r}; expected one of {sorted(KARPATHY_SPLITS)}")
        sentences = entry.get("sentences")
        if not isinstance(sentences, list):
            raise DataError(f"{where}: 'sentences' must be a list of {{'raw': ...}} objects")
        splits[split]["image"].append(_image_path(image_dir, entry, where))
        splits[split]["captions"].append([s.get("raw") if isinstance(s, dict) else s for s in sentences])
    return splits


def _coco(data: dict, path: str, image_dir: Path) -> dict[str, list]:
    captions: dict[int, list] = defaultdict(list)
    for annotation in data["annotations"]:
        captions[annotation["image_id"]].append(annotation.get("caption"))
    rows: dict[str, list] = {"image": [], "captions": []}
    for index, entry in enumerate(data["images"]):
        rows["image"].append(_image_path(image_dir, entry, f"{path}, images[{index}]"))
        rows["captions"].append(captions.get(entry.get("id"), []))  # none: named by the row checks
    return rows


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"--captions_file {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a valid JSON file ({error})") from None
    if not isinstance(data, dict) or "images" not in data:
        raise DataError(f"{path}: expected a top-level 'images' list (Karpathy's dataset_*.json or COCO captions)")
    return data


def _dataset(rows: dict[str, list]) -> Dataset:
    # A caption that is not a string (a number, an object) is stored as null, which the row checks then name.
    captions = [[c if isinstance(c, str) else None for c in row] for row in rows["captions"]]
    return Dataset.from_dict({"image": rows["image"], "captions": captions}, features=features_of((CAPTIONS,)))


def load_caption_json(files: CaptionDataArguments) -> DatasetDict:
    """A Karpathy-split JSON (every split in one file) or COCO captions JSON files (one per split)."""
    if not files.captions_file or not files.image_dir:
        raise DataError("dataset 'coco_json' needs --captions_file and --image_dir")
    if not os.path.isdir(files.image_dir):
        raise DataError(f"--image_dir {files.image_dir}: no such folder")
    image_dir = Path(files.image_dir)
    data = _read_json(files.captions_file)
    if "annotations" not in data:  # Karpathy: one file, a split per image
        return DatasetDict(
            {split: _dataset(rows) for split, rows in _karpathy(data, files.captions_file, image_dir).items()}
        )
    splits = {"train": _dataset(_coco(data, files.captions_file, image_dir))}
    if files.eval_captions_file:
        splits["validation"] = _dataset(
            _coco(_read_json(files.eval_captions_file), files.eval_captions_file, image_dir)
        )
    return DatasetDict(splits)


def load_scenes_captions() -> DatasetDict:
    """The synthetic scenes dataset (`mmft.data.scenes`) with its `objects` column dropped."""
    from .scenes import load_scenes

    return DatasetDict({split: data.remove_columns("objects") for split, data in load_scenes().items()})


def caption_datasets(files: CaptionDataArguments) -> dict:
    """The named datasets of the caption tasks."""
    return {"coco_json": lambda spec: load_caption_json(files), "scenes": lambda spec: load_scenes_captions()}


__all__ = ["CAPTIONS", "CaptionDataArguments", "caption_datasets", "load_caption_json", "load_scenes_captions"]
