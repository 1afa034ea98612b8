"""Image-caption data shared by the retrieval and captioning tasks: the `captions` column and the caption formats.

Rows are `image` + `captions` (one or more strings). Sources, besides the generic ones of `mmft.data.sources`
(an imagefolder whose `metadata.jsonl` rows carry `captions` or `caption`; a table whose `caption` cell holds one
caption or a JSON list; a Hub dataset mapped with `--caption_column`, e.g. the Flickr30k layout):

- **COCO / Karpathy-split JSON** (`--dataset coco_json --captions_file dataset_coco.json --image_dir ...`): the
  `dataset_coco.json` / `dataset_flickr30k.json` layout (`images` with `filepath`, `filename`, `split` and
  `sentences`; `restval` joins `train`), or COCO's own `captions_*.json` (`images` + `annotations`), one file per
  split (`--captions_file` for train, `--eval_captions_file` for eval).
- **scenes** (`--dataset scenes`): the synthetic offline demo data of `mmft.data.scenes`.

Whatever the source, both caption tasks merge the rows of a split that share an image (`group_by_image`): a table
with one row per image-caption pair (Flickr30k's CSV, COCO annotations exported as rows) gives one row per image with
all its captions, so retrieval's gallery holds each image once and an image is never its own negative, and
captioning scores each image once against all its references. `--group_by_image false` turns it off.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, Image

from .columns import TEXTS, Column
from .sources import DataError, features_of
from .splits import image_key

# A table cell may hold an image's captions as a JSON list (Flickr30k's own CSV); a caption is never split on `|`.
CAPTIONS = Column(
    "captions", TEXTS, keys=("captions", "caption"), flag="caption_column", noun="caption", json_list=True
)
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "validation", "test": "test"}
_CHUNK = 1024  # rows whose images are read at a time while grouping (embedded bytes never all sit in memory)


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
    eval_image_dir: str | None = field(
        default=None,
        metadata={
            "help": "--dataset coco_json with --eval_captions_file: the folder of the eval images, where COCO keeps "
            "them apart (val2017/ beside train2017/); default: --image_dir"
        },
    )
    group_by_image: bool = field(
        default=True,
        metadata={
            "help": "merge the rows of a split that share an image (same file, or same embedded bytes) into one "
            "row with all its captions: one gallery entry per image, never its own negative (false: each row is "
            "its own image, e.g. as a negative control)"
        },
    )

    def grouped(self, data: Dataset) -> Dataset:
        """A split as the caption tasks read it: one row per image (`group_by_image`), unless turned off."""
        return group_by_image(data) if self.group_by_image else data


def group_by_image(data: Dataset) -> Dataset:
    """One row per image: the rows that share an image (`image_key`) become the first one's row with all their
    captions, in the order read; the other columns (`row`, ...) are the first row's. A caption repeated for one
    image is kept (grouping only merges rows; a run reports `test_unique_captions`). Rows without an image stay
    apart. `data` itself when no two rows share an image (COCO / Karpathy files are per image already)."""
    images = data.select_columns(["image"]).cast_column("image", Image(decode=False))
    group_of: dict[str, int] = {}
    groups: list[list[int]] = []
    for start in range(0, len(images), _CHUNK):
        for index, image in enumerate(images[start : start + _CHUNK]["image"], start=start):
            key = image_key(image)
            if key is not None and key in group_of:
                groups[group_of[key]].append(index)
                continue
            if key is not None:
                group_of[key] = len(groups)
            groups.append([index])
    if len(groups) == len(data):
        return data
    captions = data.with_format(None)["captions"]
    merged = [[caption for index in group for caption in captions[index]] for group in groups]
    firsts = data.select([group[0] for group in groups])
    feature = data.features["captions"]
    return firsts.remove_columns("captions").add_column("captions", merged, feature=feature)


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
        eval_image_dir = Path(files.eval_image_dir or files.image_dir)
        if not eval_image_dir.is_dir():
            raise DataError(f"--eval_image_dir {eval_image_dir}: no such folder")
        splits["validation"] = _dataset(
            _coco(_read_json(files.eval_captions_file), files.eval_captions_file, eval_image_dir)
        )
    return DatasetDict(splits)


def load_scenes_captions() -> DatasetDict:
    """The synthetic scenes dataset (`mmft.data.scenes`) with its `objects` column dropped."""
    from .scenes import load_scenes

    return DatasetDict({split: data.remove_columns("objects") for split, data in load_scenes().items()})


def caption_datasets(files: CaptionDataArguments) -> dict:
    """The named datasets of the caption tasks."""
    return {"coco_json": lambda spec: load_caption_json(files), "scenes": lambda spec: load_scenes_captions()}


__all__ = [
    "CAPTIONS",
    "CaptionDataArguments",
    "caption_datasets",
    "group_by_image",
    "load_caption_json",
    "load_scenes_captions",
]
