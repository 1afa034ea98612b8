"""Classification metrics in numpy: accuracy, per-class precision/recall/F1, ROC AUC and the confusion matrix.

This module is the single home of the classification logic; the `evaluate` scripts in `accuracy/`, `f1/` and
`roc_auc/` only call it. It covers single-label (integer class ids), binary and multi-label (one 0/1 vector per
example) tasks.

Conventions, chosen once here and documented in `docs/metrics.md`:

* Zero division gives 0.0: precision of a class that is never predicted, recall of a class that never occurs, and
  F1 when precision + recall == 0.
* A macro average runs over the classes that occur in the references *or* the predictions (scikit-learn's default
  label set). A class id listed only because `num_classes` is larger (never predicted, never true) still gets an
  entry in the per-class lists (all zeros, support 0) but does not enter the macro average: it carries no evidence,
  and counting it would make the macro depend on how many unused ids the caller declared.
* ROC AUC is the Mann-Whitney statistic with average ranks, so a tie between a positive and a negative score counts
  one half.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "accuracy",
    "binary_roc_auc",
    "confusion_matrix",
    "multilabel_precision_recall_f1",
    "multilabel_roc_auc",
    "plot_confusion_matrix",
    "precision_recall_f1",
    "subset_accuracy",
]


# -- input checks ------------------------------------------------------------------------------------------------
def _class_ids(values: Sequence[int], name: str) -> np.ndarray:
    """A 1-D int64 array of non-negative class ids."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one class id per example, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):  # 2.0 is fine (Arrow may hand back floats), 2.5 is not
            raise ValueError(f"{name} must be integer class ids")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} has a negative class id ({array.min()})")
    return array


def _pair(predictions: Sequence[int], references: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    preds, refs = _class_ids(predictions, "predictions"), _class_ids(references, "references")
    if len(preds) != len(refs):
        raise ValueError(f"got {len(preds)} predictions but {len(refs)} references")
    if len(refs) == 0:
        raise ValueError("no predictions to score")
    return preds, refs


def _binary_matrix(values: Sequence[Sequence[int]], name: str) -> np.ndarray:
    """An (N, K) bool array from one 0/1 vector per example; ragged rows or other values raise."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except ValueError as error:  # numpy refuses ragged nested lists
        raise ValueError(f"{name}: every example needs a 0/1 vector of the same length") from error
    if array.ndim != 2:
        raise ValueError(f"{name} must be one 0/1 vector per example, got shape {array.shape}")
    if not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{name} must contain only 0 and 1")
    return array.astype(bool)


def _multilabel_pair(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    preds, refs = _binary_matrix(predictions, "predictions"), _binary_matrix(references, "references")
    if preds.shape != refs.shape:
        raise ValueError(f"predictions have shape {preds.shape} but references {refs.shape}")
    if len(refs) == 0:
        raise ValueError("no predictions to score")
    return preds, refs


# -- accuracy ----------------------------------------------------------------------------------------------------
def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Fraction of examples whose predicted class id equals the reference."""
    preds, refs = _pair(predictions, references)
    return float(np.mean(preds == refs))


def subset_accuracy(predictions: Sequence[Sequence[int]], references: Sequence[Sequence[int]]) -> float:
    """Multi-label exact match: fraction of examples whose whole 0/1 vector equals the reference vector."""
    preds, refs = _multilabel_pair(predictions, references)
    return float(np.mean((preds == refs).all(axis=1)))


# -- precision / recall / F1 ---------------------------------------------------------------------------------------
def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0.0 where the denominator is 0 (the zero-division convention)."""
    numerator, denominator = numerator.astype(np.float64), denominator.astype(np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _scores_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, float | list]:
    """Per-class and macro precision/recall/F1 from per-class counts (each shape (K,))."""
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    seen = (tp + fp + fn) > 0  # in the references or the predictions: the macro's label set
    macro = {
        name: float(values[seen].mean()) if seen.any() else 0.0
        for name, values in (("precision", precision), ("recall", recall), ("f1", f1))
    }
    return {
        "precision_macro": macro["precision"],
        "recall_macro": macro["recall"],
        "f1_macro": macro["f1"],
        "precision_per_class": precision.tolist(),
        "recall_per_class": recall.tolist(),
        "f1_per_class": f1.tolist(),
        "support": (tp + fn).astype(int).tolist(),
    }


def confusion_matrix(
    predictions: Sequence[int], references: Sequence[int], num_classes: int | None = None
) -> np.ndarray:
    """(K, K) int64 counts; row = reference class, column = predicted class (scikit-learn's layout).

    K is `num_classes`, or 1 + the largest id seen when it is None. An id >= `num_classes` raises.
    """
    preds, refs = _pair(predictions, references)
    largest = int(max(preds.max(), refs.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"class id {largest} is out of range for num_classes={num_classes}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (refs, preds), 1)
    return matrix


def precision_recall_f1(
    predictions: Sequence[int], references: Sequence[int], num_classes: int | None = None
) -> dict[str, float | list]:
    """Single-label macro and per-class precision, recall, F1 and support (list index = class id)."""
    matrix = confusion_matrix(predictions, references, num_classes)
    tp = np.diag(matrix)
    return _scores_from_counts(tp, fp=matrix.sum(axis=0) - tp, fn=matrix.sum(axis=1) - tp)


def multilabel_precision_recall_f1(
    predictions: Sequence[Sequence[int]], references: Sequence[Sequence[int]]
) -> dict[str, float | list]:
    """Multi-label: the same figures per label (column) of the 0/1 vectors, then the macro over labels."""
    preds, refs = _multilabel_pair(predictions, references)
    tp = (preds & refs).sum(axis=0)
    return _scores_from_counts(tp, fp=(preds & ~refs).sum(axis=0), fn=(~preds & refs).sum(axis=0))


# -- ROC AUC -------------------------------------------------------------------------------------------------------
def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`; tied values all get the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    first = np.flatnonzero(starts_group)  # 0-based position of each group's first member
    last = np.r_[first[1:], len(values)]  # one past each group's last member
    ranks = np.empty(len(values))
    ranks[order] = ((first + 1 + last) / 2)[group]  # mean of the 1-based ranks first+1 .. last
    return ranks


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC; the caller makes sure both classes are present."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    rank_sum = _average_ranks(scores)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _scores(values, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    return array


def binary_roc_auc(scores: Sequence[float], references: Sequence[int]) -> float:
    """Area under the ROC curve of scores for the positive class against 0/1 references (ties count half)."""
    values = _scores(scores, "prediction_scores", ndim=1)
    refs = _binary_matrix(np.asarray(references).reshape(-1, 1), "references")[:, 0]
    if len(values) != len(refs):
        raise ValueError(f"got {len(values)} scores but {len(refs)} references")
    if refs.all() or not refs.any():
        present = "no examples" if len(refs) == 0 else f"only class {int(refs[0])}"
        raise ValueError(f"ROC AUC needs both classes (0 and 1) in the references; got {present}")
    return _auc(values, refs)


def multilabel_roc_auc(scores: Sequence[Sequence[float]], references: Sequence[Sequence[int]]) -> dict:
    """Per-label AUC of (N, K) scores against (N, K) 0/1 references, and their macro over the usable labels.

    A label whose references hold a single class has no AUC: it is `None` in `roc_auc_per_label`, left out of the
    macro and counted in `num_labels_skipped`. If no label is usable this raises.
    """
    values = _scores(scores, "prediction_scores", ndim=2)
    refs = _binary_matrix(references, "references")
    if values.shape != refs.shape:
        raise ValueError(f"prediction_scores have shape {values.shape} but references {refs.shape}")
    per_label = [
        _auc(values[:, k], refs[:, k]) if 0 < refs[:, k].sum() < len(refs) else None for k in range(refs.shape[1])
    ]
    usable = [auc for auc in per_label if auc is not None]
    if not usable:
        raise ValueError("ROC AUC: no label has both classes (0 and 1) in the references")
    return {
        "roc_auc": float(np.mean(usable)),
        "roc_auc_per_label": per_label,
        "num_labels_skipped": len(per_label) - len(usable),
    }


# -- plotting ------------------------------------------------------------------------------------------------------
def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: str | Path) -> Path:
    """Write `matrix` (rows = reference, columns = prediction) as an annotated PNG heat map; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(labels):
        raise ValueError(f"need a square matrix with one label per row; got {matrix.shape} and {len(labels)} labels")
    size = max(4.0, 0.6 * len(labels) + 2.0)
    figure = Figure(figsize=(size, size), dpi=100)  # no pyplot: no global backend state, safe in any process
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels=list(labels), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(labels))
    axes.set_xlabel("predicted")
    axes.set_ylabel("reference")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):  # dark cells get white text so the count stays readable
        axes.text(col, row, f"{count:g}", ha="center", va="center", color="white" if count > threshold else "black")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    return path
