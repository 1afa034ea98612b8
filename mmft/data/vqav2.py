"""VQAv2's official files as a dataset: the questions and annotations JSON of each split and a COCO image folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value

from .sources import DataError

FEATURES = Features({"image": Image(), "question": Value("string"), "answers": Sequence(Value("string"))})


def _split(questions_file: str, annotations_file: str | None, image_dir: str) -> Dataset:
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
            raise DataError(
                f"{questions_file}, question {index}: no image for image_id {question['image_id']} in {image_dir}"
            )
        rows["image"].append(images[question["image_id"]])
        rows["question"].append(question["question"])
        rows["answers"].append(answers_by_id.get(question["question_id"], []))
    return Dataset.from_dict(rows, features=FEATURES)


def load_vqav2(files) -> DatasetDict:
    """Train (and optionally eval) splits from `files`, which has the VQA task's `*_file` / `*image_dir` flags."""
    if not (files.questions_file and files.image_dir):
        raise DataError("dataset 'vqav2' needs --questions_file, --annotations_file and --image_dir")
    splits = {"train": _split(files.questions_file, files.annotations_file, files.image_dir)}
    if files.eval_questions_file:
        splits["validation"] = _split(
            files.eval_questions_file, files.eval_annotations_file, files.eval_image_dir or files.image_dir
        )
    return DatasetDict(splits)
