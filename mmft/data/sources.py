"""Where VQA data comes from: easy-VQA, a Hub dataset, a local imagefolder + metadata.jsonl, or VQAv2 files.

Every source ends as a `DatasetDict` whose splits have the columns `image` (Image feature), `question` (str),
`answers` (list of str) and optionally `question_type`; `validate_split` then checks it cheaply before training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value, load_dataset

from ..input_checks import question_problem
from .easy_vqa import load_easy_vqa

VQA_FEATURES = Features(
    {"image": Image(), "question": Value("string"), "answers": Sequence(Value("string"))}
)
EVAL_SPLIT_NAMES = ("test", "validation", "val")


class DataError(ValueError):
    """A problem with the user's data, with the file/row/column it was found in and what to do."""


@dataclass
class SourceSpec:
    """What `load_vqa_data` needs to know; the recipe's `DataArguments` extend it (one definition of each field)."""

    dataset: str = field(default="easy_vqa", metadata={"help": "easy_vqa, vqav2, a local folder, or a Hub dataset id"})
    train_split: str = "train"
    eval_split: str | None = field(default=None, metadata={"help": "default: the first of test/validation/val"})
    image_column: str = "image"
    question_column: str = "question"
    answers_column: str = "answers"
    questions_file: str | None = None
    annotations_file: str | None = None
    image_dir: str | None = None
    eval_questions_file: str | None = None
    eval_annotations_file: str | None = None
    eval_image_dir: str | None = None


def _as_answer_list(value: Any) -> list[str]:
    # Hub VQA datasets store answers as a string, a list of strings, or VQAv2's [{"answer": ...}, ...].
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and "answer" in value:  # a Sequence of dicts arrives as a dict of lists
        value = value["answer"]
    return [item["answer"] if isinstance(item, dict) else str(item) for item in value]


def _read_metadata(split_dir: Path) -> Dataset:
    metadata = split_dir / "metadata.jsonl"
    if not metadata.is_file():
        raise DataError(f"{split_dir}: no metadata.jsonl; each split folder needs one line per question")
    rows: dict[str, list] = {"image": [], "question": [], "answers": []}
    with metadata.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{metadata}, line {line_number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column "
                    f"{error.start + 1}); re-save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{metadata}, line {line_number}: not valid JSON ({error.msg})") from None
            for key in ("file_name", "question"):
                if key not in record:
                    raise DataError(f"{metadata}, line {line_number}: missing field {key!r}")
            if "answers" not in record and "answer" not in record:
                raise DataError(f"{metadata}, line {line_number}: needs 'answers' (list) or 'answer' (string)")
            problem = question_problem(record["question"]) if isinstance(record["question"], str) else None
            if problem and "UTF-8" in problem:  # a JSON-escaped lone surrogate: Arrow cannot even store it
                raise DataError(f"{metadata}, line {line_number}: {problem}")
            rows["image"].append(str(split_dir / record["file_name"]))
            rows["question"].append(record["question"])
            rows["answers"].append(_as_answer_list(record.get("answers", record.get("answer"))))
    return Dataset.from_dict(rows, features=VQA_FEATURES)


def _has_metadata(root: Path) -> bool:
    return (root / "metadata.jsonl").is_file() or any((p / "metadata.jsonl").is_file() for p in root.iterdir())


def load_imagefolder(path: str) -> DatasetDict:
    """`path/<split>/metadata.jsonl` (+ images beside it), the `imagefolder` layout, one folder per split.

    Read here rather than through `load_dataset("imagefolder")` so that a bad line is reported with its file and
    line number instead of being dropped or failing deep inside the builder.
    """
    root = Path(path)
    splits = sorted(p.name for p in root.iterdir() if (p / "metadata.jsonl").is_file())
    if not splits:
        if (root / "metadata.jsonl").is_file():
            return DatasetDict({"train": _read_metadata(root)})
        raise DataError(f"{root}: expected <split>/metadata.jsonl (e.g. train/, test/) or a metadata.jsonl")
    return DatasetDict({split: _read_metadata(root / split) for split in splits})


def _vqav2_split(questions_file: str, annotations_file: str | None, image_dir: str) -> Dataset:
    with open(questions_file, encoding="utf-8") as handle:
        questions = json.load(handle).get("questions")
    if questions is None:
        raise DataError(f"{questions_file}: no top-level 'questions' list; is this a VQAv2 questions file?")
    answers_by_id: dict[int, list[str]] = {}
    if annotations_file:
        with open(annotations_file, encoding="utf-8") as handle:
            annotations = json.load(handle).get("annotations")
        if annotations is None:
            raise DataError(f"{annotations_file}: no top-level 'annotations' list")
        answers_by_id = {a["question_id"]: [x["answer"] for x in a["answers"]] for a in annotations}
    images = {}
    for name in os.listdir(image_dir):  # COCO_<split>_<12-digit id>.jpg
        stem = Path(name).stem
        if stem[-12:].isdigit():
            images[int(stem[-12:])] = os.path.join(image_dir, name)
    rows: dict[str, list] = {"image": [], "question": [], "answers": []}
    for index, question in enumerate(questions):
        if question["image_id"] not in images:
            raise DataError(f"{questions_file}, question {index}: no image for image_id {question['image_id']} in {image_dir}")
        rows["image"].append(images[question["image_id"]])
        rows["question"].append(question["question"])
        rows["answers"].append(answers_by_id.get(question["question_id"], []))
    return Dataset.from_dict(rows, features=VQA_FEATURES)


def load_vqav2(spec: SourceSpec) -> DatasetDict:
    """VQAv2's official question/annotation JSON files and a COCO image folder, for train and (optionally) eval."""
    if not (spec.questions_file and spec.image_dir):
        raise DataError("dataset 'vqav2' needs --questions_file, --annotations_file and --image_dir")
    splits = {"train": _vqav2_split(spec.questions_file, spec.annotations_file, spec.image_dir)}
    if spec.eval_questions_file:
        splits["validation"] = _vqav2_split(
            spec.eval_questions_file, spec.eval_annotations_file, spec.eval_image_dir or spec.image_dir
        )
    return DatasetDict(splits)


def load_hub(spec: SourceSpec) -> DatasetDict:
    """A Hub dataset (or any `load_dataset` path), its columns renamed to image/question/answers."""
    loaded = load_dataset(spec.dataset)
    renamed = {}
    for split, data in loaded.items():
        for wanted in (spec.image_column, spec.question_column, spec.answers_column):
            if wanted not in data.column_names:
                raise DataError(
                    f"dataset {spec.dataset!r}, split {split!r}: no column {wanted!r}; columns are "
                    f"{data.column_names}; map them with --image_column/--question_column/--answers_column"
                )
        data = data.rename_columns(
            {k: v for k, v in {spec.image_column: "image", spec.question_column: "question"}.items() if k != v}
        )
        data = data.map(
            lambda row: {"answers": _as_answer_list(row[spec.answers_column])},
            remove_columns=[c for c in data.column_names if c not in ("image", "question", "question_type")],
        )
        renamed[split] = data.cast_column("image", Image())
    return DatasetDict(renamed)


SOURCES: dict[str, Callable[[SourceSpec], DatasetDict]] = {
    "easy_vqa": lambda spec: load_easy_vqa(),
    "vqav2": load_vqav2,
}


def load_vqa_data(spec: SourceSpec) -> tuple[Dataset, Dataset]:
    """(train, eval) splits of `spec.dataset`: a registered name, an imagefolder with metadata.jsonl, or anything
    `datasets.load_dataset` reads (a Hub id, or a local folder of parquet/arrow/csv files)."""
    if spec.dataset in SOURCES:
        splits = SOURCES[spec.dataset](spec)
    elif os.path.isdir(spec.dataset) and _has_metadata(Path(spec.dataset)):
        splits = load_imagefolder(spec.dataset)
    else:
        splits = load_hub(spec)
    eval_split = spec.eval_split or next((s for s in EVAL_SPLIT_NAMES if s in splits), None)
    for role, split in (("train", spec.train_split), ("eval", eval_split)):
        if split not in splits:
            raise DataError(
                f"dataset {spec.dataset!r} has no {role} split {split!r}; available splits: {sorted(splits)}"
                + ("" if split else "; name one with --eval_split")
            )
    return splits[spec.train_split], splits[eval_split]
