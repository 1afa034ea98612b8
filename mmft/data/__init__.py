"""VQA data: sources, validation, answer vocabulary, on-the-fly transforms and the collator."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from datasets import Dataset, Image

from .answers import build_answer_vocab, is_single_answer, out_of_vocab_rows
from .collator import VQACollator, VQATransform, excluded_eval_positions
from .easy_vqa import load_easy_vqa
from .rejects import BadExample, BadExamplePolicy
from .sources import DataError, SourceSpec, load_vqa_data
from .validation import validate_split

logger = logging.getLogger(__name__)

__all__ = [
    "BadExample",
    "BadExamplePolicy",
    "DataError",
    "excluded_eval_positions",
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
    policy: BadExamplePolicy | None = None

    def attach(self, image_processor) -> None:
        label2id = {answer: i for i, answer in enumerate(self.answers)}
        for split, data in (("train", self.train), ("eval", self.eval)):
            data.set_transform(VQATransform(image_processor, label2id, self.single_answer, split, self.policy))


def prepare_vqa_splits(
    spec: SourceSpec,
    answers: list[str] | None = None,
    top_k_answers: int | None = 3129,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    policy: BadExamplePolicy | None = None,
) -> VQASplits:
    """Load and validate the (train, eval) splits of `spec` and fix the answer vocabulary.

    `answers` fixes the vocabulary (e.g. a checkpoint's `id2label`); otherwise it is the `top_k_answers` most
    frequent training answers (3,129 is VQAv2's customary size). Bad rows raise or are skipped as `policy` says
    (default: raise). Training questions with no answer in the vocabulary are dropped (they teach nothing); eval
    questions keep theirs and are scored as wrong.
    """
    policy = policy or BadExamplePolicy(source=spec.dataset)
    train, evaluation = load_vqa_data(spec)
    train, evaluation = _limit(train, max_train_samples), _limit(evaluation, max_eval_samples)
    # `row` is the row number in the split as loaded: what a rejects entry or an error message refers to.
    train, evaluation = (data.add_column("row", list(range(len(data)))) for data in (train, evaluation))
    train = validate_split(train, "train", spec.dataset, policy)
    evaluation = validate_split(evaluation, "eval", spec.dataset, policy)
    from_checkpoint = bool(answers)
    answers = list(answers) if answers else build_answer_vocab(train["answers"], top_k=top_k_answers)
    label2id = {answer: i for i, answer in enumerate(answers)}
    unknown_train = out_of_vocab_rows(train["answers"], label2id)
    unknown_eval = out_of_vocab_rows(evaluation["answers"], label2id)
    if from_checkpoint:
        check_vocabulary_overlap(answers, train["answers"], unknown_train, len(evaluation), len(unknown_eval))
    if unknown_train:
        logger.warning(
            "%d of %d training questions have no answer in the %d-answer vocabulary; they are ignored (not trained on)",
            len(unknown_train), len(train), len(answers),
        )  # fmt: skip
        dropped = set(unknown_train)
        train = train.select([i for i in range(len(train)) if i not in dropped])
    if unknown_eval:
        logger.warning("%d of %d eval questions have no answer in the vocabulary; they count as wrong",
                       len(unknown_eval), len(evaluation))  # fmt: skip
    # Undecoded images: VQATransform decodes them itself so a bad file is reported with its path and row.
    train, evaluation = (data.cast_column("image", Image(decode=False)) for data in (train, evaluation))
    return VQASplits(train, evaluation, answers, is_single_answer(train["answers"]), policy)


def check_vocabulary_overlap(
    vocabulary: list[str], train_answers: list[list[str]], unknown_train: list[int], n_eval: int, n_unknown_eval: int
) -> None:
    """A checkpoint's answer vocabulary against a dataset: an error when they share nothing, else a warning."""
    from ..metrics.vqa_normalization import normalize_answer

    distinct = {normalize_answer(a) for row in train_answers for a in row} - {""}
    missing = sorted(distinct - set(vocabulary))
    if not missing and not n_unknown_eval:
        return
    message = (
        f"answer vocabulary mismatch: the checkpoint knows {len(vocabulary)} answers; the dataset's training split "
        f"uses {len(distinct)} distinct answers, {len(missing)} of them unknown to the checkpoint "
        f"(e.g. {missing[:5]}); {len(unknown_train)} of {len(train_answers)} training and {n_unknown_eval} of "
        f"{n_eval} eval questions have no known answer"
    )
    if len(unknown_train) == len(train_answers) or (n_eval and n_unknown_eval == n_eval):
        raise DataError(
            message + ". Is this the checkpoint for this dataset? To train a new answer head, build the model from "
            "towers (--vision_model/--text_model) instead of --model_name_or_path"
        )
    logger.warning("%s; those training questions are ignored and those eval questions count as wrong", message)
