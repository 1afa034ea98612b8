"""VQAv2's official files as a dataset: the questions and annotations JSON of each split and a COCO image folder.

Each row keeps the official `question_id` (for the results file of the official evaluation, `mmft evaluate
--submission`) and the annotations' `question_type` and `answer_type` (accuracy per type; empty without
annotations)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value

from ...data.sources import DataError

FEATURES = Features(
    {
        "image": Image(),
        "question": Value("string"),
        "answers": Sequence(Value("string")),
        "question_id": Value("int64"),
        "question_type": Value("string"),
        "answer_type": Value("string"),
    }
)


def _split(questions_file: str, annotations_file: str | None, image_dir: str) -> Dataset:
    with open(questions_file, encoding="utf-8") as handle:
        questions = json.load(handle).get("questions")
    if questions is None:
        raise DataError(f"{questions_file}: no top-level 'questions' list; is this a VQAv2 questions file?")
    annotations_by_id: dict[int, dict] = {}
    if annotations_file:
        with open(annotations_file, encoding="utf-8") as handle:
            annotations = json.load(handle).get("annotations")
        if annotations is None:
            raise DataError(f"{annotations_file}: no top-level 'annotations' list")
        annotations_by_id = {a["question_id"]: a for a in annotations}
    images = {}
    for name in os.listdir(image_dir):  # COCO_<split>_<12-digit id>.jpg
        stem = Path(name).stem
        if stem[-12:].isdigit():
            images[int(stem[-12:])] = os.path.join(image_dir, name)
    rows: dict[str, list] = {name: [] for name in FEATURES}
    for index, question in enumerate(questions):
        if question["image_id"] not in images:
            raise DataError(
                f"{questions_file}, question {index}: no image for image_id {question['image_id']} in {image_dir}"
            )
        rows["image"].append(images[question["image_id"]])
        rows["question"].append(question["question"])
        annotation = annotations_by_id.get(question["question_id"], {})
        rows["answers"].append([x["answer"] for x in annotation.get("answers", [])])
        rows["question_id"].append(question["question_id"])
        rows["question_type"].append(annotation.get("question_type", ""))
        rows["answer_type"].append(annotation.get("answer_type", ""))
    return Dataset.from_dict(rows, features=FEATURES)


def load_vqav2(files) -> DatasetDict:
    """Train and/or eval splits from `files`, which has the VQA task's `*_file` / `*image_dir` flags (`mmft evaluate`
    needs only the eval ones)."""
    eval_images = files.eval_image_dir or files.image_dir
    if not ((files.questions_file and files.image_dir) or (files.eval_questions_file and eval_images)):
        raise DataError("dataset 'vqav2' needs --questions_file, --annotations_file and --image_dir")
    splits = {}
    if files.questions_file:
        splits["train"] = _split(files.questions_file, files.annotations_file, files.image_dir)
    if files.eval_questions_file:
        splits["validation"] = _split(
            files.eval_questions_file, files.eval_annotations_file, files.eval_image_dir or files.image_dir
        )
    return DatasetDict(splits)
