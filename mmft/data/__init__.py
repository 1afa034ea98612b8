"""VQA data: sources, validation, answer vocabulary, on-the-fly transforms and the collator."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from datasets import Dataset, Image

from .answers import build_answer_vocab, count_out_of_vocab, is_single_answer
from .collator import VQACollator, VQATransform
from .easy_vqa import load_easy_vqa
from .sources import DataError, SourceSpec, load_vqa_data
from .validation import validate_split

logger = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "SourceSpec",
    "VQACollator",
    "VQATransform",
    "build_answer_vocab",
    "load_easy_vqa",
    "load_vqa_data",
    "VQASplits",
    "prepare_vqa_splits",
]


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


@dataclass
class VQASplits:
    """Validated (train, eval) splits with their answer vocabulary; `attach` adds the on-the-fly transform."""

    train: Dataset
    eval: Dataset
    answers: list[str]
    single_answer: bool

    def attach(self, image_processor) -> None:
        label2id = {answer: i for i, answer in enumerate(self.answers)}
        for split, data in (("train", self.train), ("eval", self.eval)):
            data.set_transform(VQATransform(image_processor, label2id, self.single_answer, split))


def prepare_vqa_splits(
    spec: SourceSpec,
    answers: list[str] | None = None,
    top_k_answers: int | None = 3129,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> VQASplits:
    """Load and validate the (train, eval) splits of `spec` and fix the answer vocabulary.

    `answers` fixes the vocabulary (e.g. a checkpoint's `id2label`); otherwise it is the `top_k_answers` most
    frequent training answers (3,129 is VQAv2's customary size).
    """
    train, evaluation = load_vqa_data(spec)
    train, evaluation = _limit(train, max_train_samples), _limit(evaluation, max_eval_samples)
    for split, data in (("train", train), ("eval", evaluation)):
        validate_split(data, split, spec.dataset)
    answers = list(answers) if answers else build_answer_vocab(train["answers"], top_k=top_k_answers)
    label2id = {answer: i for i, answer in enumerate(answers)}
    skipped = count_out_of_vocab(train["answers"], label2id)
    if skipped:
        logger.warning("%d of %d training questions have no answer in the vocabulary; they are ignored", skipped, len(train))
    # Undecoded images: VQATransform decodes them itself so a bad file is reported with its path and row.
    train, evaluation = (
        data.cast_column("image", Image(decode=False)).add_column("row", list(range(len(data))))
        for data in (train, evaluation)
    )
    return VQASplits(train, evaluation, answers, is_single_answer(train["answers"]))
