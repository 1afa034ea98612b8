"""Image-text classification: an (image, text) pair -> one label, several labels, or true/false.

Rows are `image`, `text` and `labels` (a `label` or a list of `labels` per row). Visual entailment, hateful memes
and multimodal sentiment are all this task. The label vocabulary comes from the training split (numeric labels in
numeric order, others alphabetically, unless `--class_names` fixes it) and becomes `id2label`; with two labels the
second one is the positive class of ROC-AUC. Metrics: accuracy, macro and per-class precision/recall/F1, ROC-AUC
(binary and multi-label), and a confusion matrix PNG (single-label).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from ...data.columns import LABELS, TEXT, Column
from ...data.sources import DataError
from ...inference.bad_rows import scored_rows
from ...inference.scores import label_scores
from ...metrics import load_metric
from ..base import CardInfo, Task, TaskData
from .easy_vqa_entailment import load_easy_vqa_entailment
from .modeling import MULTI_LABEL, SINGLE_LABEL, MMFTForImageTextClassification

logger = logging.getLogger("mmft.data")

TEXT_COLUMN = Column("text", TEXT, noun="text")
LABELS_COLUMN = Column("labels", LABELS, keys=("labels", "label"), flag="label_column", noun="label")


@dataclass
class ClassificationArguments:
    """Flags of the image-text classification task."""

    text_column: str | None = field(
        default=None, metadata={"help": "text column of a Hub dataset/table (default: text)"}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "label column: one label, or a list for multi-label (default: labels/label)"}
    )
    class_names: str | None = field(
        default=None, metadata={"help": "comma-separated labels in id order (default: from the training split)"}
    )
    multi_label: bool | None = field(
        default=None, metadata={"help": "sigmoid per label (BCE); default: on when some row has != 1 label"}
    )
    class_weights: str | None = field(
        default=None, metadata={"help": "'balanced' (inverse frequency) or one comma-separated weight per label"}
    )


def label_order(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order ("0" < "1" < "10"), anything else alphabetically."""
    if all(re.fullmatch(r"-?\d+", label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def balanced_weights(train_labels: list[list[str]], vocabulary: list[str], multi_label: bool) -> list[float]:
    """Inverse-frequency class weights (single-label), or negatives/positives per label (multi-label pos_weight)."""
    counts = Counter(label for row in train_labels for label in row)
    if multi_label:
        return [max(len(train_labels) - counts[label], 1) / max(counts[label], 1) for label in vocabulary]
    return [len(train_labels) / (len(vocabulary) * max(counts[label], 1)) for label in vocabulary]


def streamed_label_problem(row: dict, known: frozenset[str], multi: bool) -> str | None:
    """Why a streamed row's labels do not fit the vocabulary fixed before training (None when they do)."""
    unknown = [label for label in row["labels"] if label not in known]
    if unknown:
        return (
            f"labels {unknown} are not in the label vocabulary {sorted(known)} (fixed from --class_names, the "
            "checkpoint, or the first --streaming_head_rows training rows); pass --class_names with every label"
        )
    if not multi and len(row["labels"]) != 1:
        return f"{len(row['labels'])} labels in a single-label run; pass --multi_label true"
    return None


def check_known_labels(split: str, data: Dataset, vocabulary: list[str], where: str) -> None:
    """A `DataError` naming the rows of `data` whose labels `vocabulary` (from `where`) does not have."""
    known = set(vocabulary)
    unknown = [
        (row, [x for x in values if x not in known])
        for row, values in zip(data["row"], data["labels"])
        if not set(values) <= known
    ]
    if unknown:
        examples = "; ".join(f"row {row}: {values}" for row, values in unknown[:5])
        raise DataError(
            f"split {split!r}: {len(unknown)} row(s) have labels that {where} does not have ({examples}). "
            f"Known labels: {vocabulary}. Fix the labels, or pass --class_names with every label"
        )


def metric_name(label: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", label).strip("_") or "label"


class ClassificationTask(Task):
    """Image + text -> label(s)."""

    name = "classification"
    model_class = MMFTForImageTextClassification
    arguments_class = ClassificationArguments
    columns = (TEXT_COLUMN, LABELS_COLUMN)
    text_column = "text"
    keep_columns = ("statement_type",)
    default_dataset = "easy_vqa_entailment"
    commands = ("predict", "explain")
    demo = "mmft.tasks.classification.demo:classification_page"  # `mmft demo`
    card = CardInfo(
        pipeline_tag=None,  # the Hub has no image-text classification pipeline tag
        task_type="image-text-classification",
        task_name="Image-Text Classification",
        summary="An image-text classification model",
        metrics=("accuracy", "f1_macro", "roc_auc"),
        usage=(
            "from transformers import pipeline\n"
            "from mmft import AutoModelForImageTextClassification\n\n"
            'model = AutoModelForImageTextClassification.from_pretrained("{repo}")\n'
            'classify = pipeline("mmft-image-text-classification", model="{repo}")\n'
            'print(classify(image="image.png", text="there is a red circle", top_k=2))'
        ),
    )

    def datasets(self) -> dict[str, Callable]:
        return {"easy_vqa_entailment": lambda spec: load_easy_vqa_entailment()}

    def selection_metric(self) -> str:
        return "f1_macro" if self.args.multi_label else self.main_metric  # --multi_label true: macro F1

    # -- targets ---------------------------------------------------------------------------------------------------
    def build_targets(self, train: Dataset, evaluation: Dataset, labels: list[str] | None) -> TaskData:
        seen = {label for row in train["labels"] for label in row}
        if labels is None and self.args.class_names:
            labels = [name.strip() for name in self.args.class_names.split(",") if name.strip()]
        vocabulary = list(labels) if labels else label_order(seen)
        if len(vocabulary) < 2:
            raise DataError(f"the training split has {len(vocabulary)} label(s) {vocabulary}; a classifier needs >= 2")
        multi = self.args.multi_label
        if multi is None:
            multi = any(len(row) != 1 for row in train["labels"])
        data = TaskData(train, evaluation, vocabulary, {"multi_label": multi, "from_checkpoint": bool(labels)})
        for split, rows in (("train", train), ("eval", evaluation)):
            self.check_split(data, rows, split)
        data.info["class_weights"] = self.class_weights(train["labels"], vocabulary, multi)
        return data

    def check_split(self, data: TaskData, split: Dataset, name: str) -> None:
        """Every label of `split` must be in the vocabulary, and single-label rows have one label."""
        fixed = data.info["from_checkpoint"]
        where = "the label vocabulary (--class_names or the checkpoint)" if fixed else "the training split"
        check_known_labels(name, split, data.labels, where)
        if not data.info["multi_label"] and any(len(row) != 1 for row in split["labels"]):
            raise DataError("some rows have several labels; pass --multi_label true (or give every row one label)")

    def eval_targets(self, evaluation: Dataset, labels, config, train=None) -> TaskData:
        """The saved model's labels, single- or multi-label and class weights as it was trained (its config)."""
        check_known_labels("eval", evaluation, labels, "the model's label vocabulary")
        multi = config.problem_type == MULTI_LABEL
        if not multi and any(len(row) != 1 for row in evaluation["labels"]):
            raise DataError("some rows have several labels, and the model is a single-label classifier")
        return TaskData(None, evaluation, list(labels), {"multi_label": multi, "class_weights": config.class_weights})

    def streamed_row_problem(self, data: TaskData) -> Callable[[dict], str | None]:
        return partial(streamed_label_problem, known=frozenset(data.labels), multi=data.info["multi_label"])

    def class_weights(self, train_labels: list[list[str]], vocabulary: list[str], multi: bool) -> list[float] | None:
        spec = self.args.class_weights
        if not spec:
            return None
        if spec == "balanced":
            return balanced_weights(train_labels, vocabulary, multi)
        try:
            weights = [float(w) for w in spec.split(",")]
        except ValueError:
            raise ValueError(f"--class_weights {spec!r}: use 'balanced' or numbers separated by commas") from None
        if len(weights) != len(vocabulary):
            raise ValueError(
                f"--class_weights has {len(weights)} values; the labels are {vocabulary} ({len(vocabulary)})"
            )
        return weights

    def config_updates(self, data: TaskData) -> dict:
        return {
            "problem_type": MULTI_LABEL if data.info["multi_label"] else SINGLE_LABEL,
            "class_weights": data.info["class_weights"],
        }

    def encode(self, data: TaskData, split: str) -> Callable:
        label2id = {label: i for i, label in enumerate(data.labels)}
        if data.info["multi_label"]:

            def multi_hot(values: list[str]) -> list[float]:
                vector = [0.0] * len(label2id)
                for value in values:
                    vector[label2id[value]] = 1.0
                return vector

            return lambda batch: {"labels": [multi_hot(values) for values in batch["labels"]]}
        return lambda batch: {"labels": [label2id[values[0]] for values in batch["labels"]]}

    # -- evaluation ------------------------------------------------------------------------------------------------
    @staticmethod
    def preprocess_logits_for_metrics(logits, labels) -> torch.Tensor:
        return logits[0] if isinstance(logits, tuple) else logits  # (N, K): ROC-AUC needs scores, not ids

    @staticmethod
    def scores(logits: np.ndarray, multi_label: bool) -> np.ndarray:
        return label_scores(torch.as_tensor(np.asarray(logits, dtype=np.float32)), multi_label).numpy()

    def references(self, data: TaskData) -> list[list[str]]:
        return data.eval.with_format(None)["labels"]

    def compute_metrics(self, data: TaskData, id2label: dict[int, str], excluded=None) -> Callable:
        multi = data.info["multi_label"]
        label2id = {label: i for i, label in id2label.items()}
        references = self.references(data)

        def compute_metrics(eval_prediction) -> dict[str, float]:
            scores = self.scores(eval_prediction.predictions, multi)
            scored = scored_rows(len(scores), excluded)
            metrics = classification_metrics(scores[scored.keep], scored.select(references), label2id, multi)
            return scored.report(metrics)

        return compute_metrics

    def prediction_records(self, data: TaskData, predictions: np.ndarray, id2label: dict[int, str]) -> list[dict]:
        multi = data.info["multi_label"]
        scores = self.scores(predictions, multi)
        raw = data.eval.with_format(None)
        records = []
        for text, reference, row in zip(raw["text"], raw["labels"], scores):
            predicted = [id2label[i] for i in np.flatnonzero(row > 0.5)] if multi else id2label[int(row.argmax())]
            records.append(
                {
                    "text": text,
                    "prediction": predicted,
                    "labels": reference,
                    "scores": {id2label[i]: round(float(s), 6) for i, s in enumerate(row)},
                }
            )
        return records

    def after_evaluation(self, output_dir, data: TaskData, prediction, id2label: dict[int, str]) -> None:
        if data.info["multi_label"]:
            return
        from ...metrics.classification import confusion_matrix, plot_confusion_matrix

        label2id = {label: i for i, label in id2label.items()}
        predicted = self.scores(prediction.predictions, False).argmax(-1)
        references = [label2id[row[0]] for row in self.references(data)]
        matrix = confusion_matrix(predicted.tolist(), references, len(id2label))
        plot_confusion_matrix(
            matrix, [id2label[i] for i in range(len(id2label))], Path(output_dir) / "confusion_matrix.png"
        )


def classification_metrics(
    scores: np.ndarray, references: list[list[str]], label2id: dict[str, int], multi_label: bool
) -> dict[str, float]:
    """accuracy, macro and per-class precision/recall/F1, ROC-AUC (binary, multi-label) from scores (N, K)."""
    names = {i: metric_name(label) for label, i in label2id.items()}
    num_classes = len(label2id)
    if multi_label:
        predicted = (scores > 0.5).astype(int).tolist()
        truth = [[int(label in set(row)) for label in sorted(label2id, key=label2id.get)] for row in references]
        accuracy = load_metric("accuracy", config_name="multilabel").compute(predictions=predicted, references=truth)
        f1 = load_metric("f1", config_name="multilabel").compute(predictions=predicted, references=truth)
        auc = load_metric("roc_auc", config_name="multilabel").compute(
            prediction_scores=scores.tolist(), references=truth
        )
    else:
        predicted = scores.argmax(-1).tolist()
        truth = [label2id[row[0]] for row in references]
        accuracy = load_metric("accuracy").compute(predictions=predicted, references=truth)
        f1 = load_metric("f1").compute(predictions=predicted, references=truth, num_classes=num_classes)
        auc = {}
        if num_classes == 2 and len(set(truth)) == 2:
            auc = load_metric("roc_auc").compute(prediction_scores=scores[:, 1].tolist(), references=truth)
    metrics = {"accuracy": accuracy["accuracy"]}
    metrics.update({key: f1[key] for key in ("precision_macro", "recall_macro", "f1_macro")})
    for kind in ("precision", "recall", "f1"):
        metrics.update({f"{kind}_{names[i]}": float(v) for i, v in enumerate(f1[f"{kind}_per_class"])})
    if "roc_auc" in auc:
        metrics["roc_auc"] = auc["roc_auc"]
    return metrics


__all__ = ["ClassificationArguments", "ClassificationTask", "classification_metrics", "label_order"]
