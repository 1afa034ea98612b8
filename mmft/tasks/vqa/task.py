"""Visual question answering: answers classified over a vocabulary of the most frequent training answers.

Rows are `image`, `question`, `answers` (one or many annotator answers). Multi-answer data trains on VQAv2 soft
scores (BCE), single-answer data on answer ids (cross-entropy); evaluation is the official VQA accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from datasets import Dataset

from ...data.columns import TEXT, TEXTS, Column
from ...data.easy_vqa import load_easy_vqa
from ...data.sources import DataError
from ...inference.bad_rows import scored_rows
from ...metrics import load_metric
from ..base import CardInfo, Task, TaskData
from .answers import (
    answer_id,
    as_answer_list,
    build_answer_vocab,
    has_known_answer,
    is_single_answer,
    out_of_vocab_rows,
    soft_scores,
)
from .modeling import MMFTForVisualQuestionAnswering
from .vqav2 import load_vqav2

logger = logging.getLogger("mmft.data")

QUESTION = Column("question", TEXT, noun="question")
# A table cell may hold several answers: a JSON list (`["red", "red", "blue"]`) or `red|red|blue`.
ANSWERS = Column(
    "answers", TEXTS, keys=("answers", "answer"), noun="answer", normalize=as_answer_list, json_list=True, separator="|"
)


@dataclass
class VQADataArguments:
    """The data flags of every task that reads VQA rows (this one, generative VQA): column names and VQAv2's official
    files."""

    question_column: str | None = field(
        default=None, metadata={"help": "question column of a Hub dataset or table (default: question)"}
    )
    answers_column: str | None = field(
        default=None, metadata={"help": "answers column: a list, a string or VQAv2 dicts (default: answers/answer)"}
    )
    questions_file: str | None = field(default=None, metadata={"help": "--dataset vqav2: training questions JSON"})
    annotations_file: str | None = None
    image_dir: str | None = None
    eval_questions_file: str | None = None
    eval_annotations_file: str | None = None
    eval_image_dir: str | None = None


def vqa_datasets(args: VQADataArguments) -> dict[str, Callable]:
    """The named datasets of every task that reads VQA rows: the offline easy-VQA and VQAv2's official files."""
    return {"easy_vqa": lambda spec: load_easy_vqa(), "vqav2": lambda spec: load_vqav2(args)}


@dataclass
class VQAArguments(VQADataArguments):
    """Flags of the VQA task: the VQA data flags (`VQADataArguments`) and the answer vocabulary."""

    top_k_answers: int = field(default=3129, metadata={"help": "answer vocabulary size (most frequent answers)"})


def check_vocabulary_overlap(
    vocabulary: list[str], train_answers: list[list[str]], unknown_train: list[int], n_eval: int, n_unknown_eval: int
) -> None:
    """A checkpoint's answer vocabulary against a dataset: an error when they share nothing, else a warning."""
    from ...metrics.vqa_normalization import normalize_answer

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


class VQATask(Task):
    """Image + question -> one answer of a fixed vocabulary."""

    name = "vqa"
    model_class = MMFTForVisualQuestionAnswering
    arguments_class = VQAArguments
    columns = (QUESTION, ANSWERS)
    text_column = "question"
    keep_columns = ("question_type", "answer_type", "question_id")  # VQAv2's: per-type accuracy, submission
    default_dataset = "easy_vqa"
    commands = ("predict", "explain")
    demo = "mmft.tasks.vqa.demo:vqa_page"  # `mmft demo`
    card = CardInfo(
        pipeline_tag="visual-question-answering",
        task_type="visual-question-answering",
        task_name="Visual Question Answering",
        summary="A visual question answering model",
        metrics=("accuracy",),
        usage=(
            "from transformers import AutoModelForVisualQuestionAnswering, pipeline\n\n"
            'model = AutoModelForVisualQuestionAnswering.from_pretrained("{repo}")\n'
            'vqa = pipeline("mmft-vqa", model="{repo}")\n'
            'print(vqa(image="image.png", question="what shape is in the image?", top_k=3))'
        ),
    )

    def datasets(self) -> dict[str, Callable]:
        return vqa_datasets(self.args)

    def build_targets(self, train: Dataset, evaluation: Dataset, labels: list[str] | None) -> TaskData:
        """Fix the answer vocabulary: `labels` (a checkpoint's), else the `top_k_answers` most frequent training
        answers (3,129 is VQAv2's customary size). Training questions with no answer in the vocabulary are dropped
        (they teach nothing); eval questions keep theirs and are scored as wrong."""
        answers = list(labels) if labels else build_answer_vocab(train["answers"], top_k=self.args.top_k_answers)
        label2id = {answer: i for i, answer in enumerate(answers)}
        unknown_train = out_of_vocab_rows(train["answers"], label2id)
        unknown_eval = out_of_vocab_rows(evaluation["answers"], label2id)
        if labels:
            check_vocabulary_overlap(answers, train["answers"], unknown_train, len(evaluation), len(unknown_eval))
        if unknown_train:
            logger.warning(
                "%d of %d training questions have no answer in the %d-answer vocabulary; they are ignored (not "
                "trained on)",
                len(unknown_train),
                len(train),
                len(answers),
            )
            dropped = set(unknown_train)
            train = train.select([i for i in range(len(train)) if i not in dropped])
        if unknown_eval:
            logger.warning(
                "%d of %d eval questions have no answer in the vocabulary; they count as wrong",
                len(unknown_eval),
                len(evaluation),
            )
        return TaskData(train, evaluation, answers, {"single_answer": is_single_answer(train["answers"])})

    def eval_targets(self, evaluation: Dataset, labels, config, train=None) -> TaskData:
        """The saved model's answer vocabulary; eval questions with no answer in it count as wrong. Single-answer or
        soft-score targets (the eval loss) as the model was trained: its `problem_type`."""
        unknown = out_of_vocab_rows(evaluation["answers"], {answer: i for i, answer in enumerate(labels)})
        if unknown and len(unknown) == len(evaluation):
            raise DataError(
                f"none of the {len(evaluation)} eval questions has an answer the model knows ({len(labels)} "
                "answers); is this the model for this dataset?"
            )
        if unknown:
            logger.warning(
                "%d of %d eval questions have no answer in the vocabulary; they count as wrong",
                len(unknown),
                len(evaluation),
            )
        single = config.problem_type == "single_label_classification"
        return TaskData(None, evaluation, list(labels), {"single_answer": single})

    def streamed_row_kept(self, data: TaskData) -> Callable[[dict], bool]:
        # As `build_targets` drops them from a loaded split: a question with no known answer teaches nothing.
        return partial(has_known_answer, label2id={answer: i for i, answer in enumerate(data.labels)})

    def config_updates(self, data: TaskData) -> dict:
        # Pipelines score single-answer models with a softmax, soft-score (VQAv2) models with a sigmoid.
        single = data.info["single_answer"]
        return {"problem_type": "single_label_classification" if single else "multi_label_classification"}

    def encode(self, data: TaskData, split: str) -> Callable:
        label2id = {answer: i for i, answer in enumerate(data.labels)}
        encode_answers = answer_id if data.info["single_answer"] else soft_scores
        return lambda batch: {"labels": [encode_answers(answers, label2id) for answers in batch["answers"]]}

    def compute_metrics(self, data: TaskData, id2label: dict[int, str], excluded=None) -> Callable:
        """Official VQA accuracy over answer strings, per question type and per answer type too when the data has
        them (VQAv2's `question_type`, `answer_type`)."""
        raw = data.eval.with_format(None)
        types, answer_types = (raw[c] if c in raw.column_names else None for c in ("question_type", "answer_type"))
        return vqa_compute_metrics(raw["answers"], types, id2label, excluded, answer_types)

    def prediction_records(self, data: TaskData, predictions: np.ndarray, id2label: dict[int, str]) -> list[dict]:
        """`question`, `prediction`, `answers`, and VQAv2's `question_id` and `answer_type` where the data has them."""
        raw = data.eval.with_format(None)
        answers = [id2label[int(i)] for i in np.asarray(predictions).reshape(-1)]
        extra = {c: raw[c] for c in ("question_id", "answer_type") if c in raw.column_names}
        return [
            {
                **{column: values[index] for column, values in extra.items()},
                "question": question,
                "prediction": answer,
                "answers": references,
            }
            for index, (question, answer, references) in enumerate(zip(raw["question"], answers, raw["answers"]))
        ]


def vqa_compute_metrics(
    references: list[list[str]],
    question_types: list[str] | None,
    id2label: dict[int, str],
    excluded: Callable[[], set[int]] | None = None,
    answer_types: list[str] | None = None,
) -> Callable:
    """`compute_metrics` for the Trainer: official VQA accuracy of predicted ids against reference answers (and per
    question type / answer type when given)."""
    metric = load_metric("vqa_accuracy")

    def compute_metrics(eval_prediction) -> dict[str, float]:
        predicted = np.asarray(eval_prediction.predictions).reshape(-1)
        scored = scored_rows(len(predicted), excluded)
        kwargs = {
            name: scored.select(values)
            for name, values in (("question_types", question_types), ("answer_types", answer_types))
            if values
        }
        scores = metric.compute(
            predictions=[id2label[int(i)] for i in scored.select(predicted)],
            references=scored.select(references),
            **kwargs,
        )
        return scored.report(scores)

    return compute_metrics


__all__ = [
    "ANSWERS",
    "QUESTION",
    "VQAArguments",
    "VQADataArguments",
    "VQATask",
    "check_vocabulary_overlap",
    "vqa_compute_metrics",
    "vqa_datasets",
]
