"""Tests for the classification metrics: accuracy, precision/recall/F1, ROC AUC, confusion matrix and its plot."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers_metrics import load_offline

from mmft.metrics import available_metrics, load_metric
from mmft.metrics.classification import (
    accuracy,
    binary_roc_auc,
    confusion_matrix,
    multilabel_precision_recall_f1,
    multilabel_roc_auc,
    plot_confusion_matrix,
    precision_recall_f1,
    subset_accuracy,
)

# One single-label case used throughout, with num_classes = 6:
#   class 0: TP 2 (ex 0, 1), FP 1 (ex 5: true 2), FN 1 (ex 2)   -> P 2/3, R 2/3, F1 2/3, support 3
#   class 1: TP 2 (ex 3, 4), FP 1 (ex 2: true 0), FN 0          -> P 2/3, R 1,   F1 (2*2/3*1)/(5/3) = 4/5
#   class 2: never predicted, 1 true                             -> P 0/0 = 0,   R 0, F1 0, support 1
#   class 3: never predicted, 1 true (predicted as 4)            -> P 0/0 = 0,   R 0, F1 0, support 1
#   class 4: predicted once, never true                          -> P 0,   R 0/0 = 0, F1 0, support 0
#   class 5: never predicted, never true                         -> all 0, support 0, NOT in the macro
REFS = [0, 0, 0, 1, 1, 2, 3]
PREDS = [0, 0, 1, 1, 1, 0, 4]


# --- accuracy ------------------------------------------------------------------------------------------------------
def test_accuracy_single_label() -> None:
    # correct: examples 0, 1, 3, 4 -> 4 / 7
    assert accuracy(PREDS, REFS) == pytest.approx(4 / 7)


def test_subset_accuracy_needs_the_whole_vector() -> None:
    refs = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]
    preds = [[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0]]
    # only the last row matches entirely -> 1 / 4. Negative control: per-label (Hamming) accuracy would be
    # (2 + 2 + 2 + 3) / 12 = 0.75.
    assert subset_accuracy(preds, refs) == 0.25
    assert np.mean(np.array(preds) == np.array(refs)) == 0.75


@pytest.mark.parametrize(
    ("predictions", "references"),
    [([], []), ([0, 1], [0]), ([-1], [0]), ([0.5], [0])],
)
def test_accuracy_rejects_bad_input(predictions, references) -> None:
    with pytest.raises(ValueError):
        accuracy(predictions, references)


def test_subset_accuracy_rejects_non_binary_and_ragged() -> None:
    with pytest.raises(ValueError, match="0 and 1"):
        subset_accuracy([[2, 0]], [[1, 0]])
    with pytest.raises(ValueError):
        subset_accuracy([[1, 0], [1]], [[1, 0], [1, 0]])


# --- precision / recall / F1 ---------------------------------------------------------------------------------------
def test_per_class_scores_with_zero_division_and_absent_class() -> None:
    result = precision_recall_f1(PREDS, REFS, num_classes=6)
    assert result["precision_per_class"] == pytest.approx([2 / 3, 2 / 3, 0, 0, 0, 0])
    assert result["recall_per_class"] == pytest.approx([2 / 3, 1, 0, 0, 0, 0])
    assert result["f1_per_class"] == pytest.approx([2 / 3, 4 / 5, 0, 0, 0, 0])
    assert result["support"] == [3, 2, 1, 1, 0, 0]
    # macro over the 5 classes seen in references or predictions (0..4), class 5 left out:
    #   P = (2/3 + 2/3) / 5 = 4/15, R = (2/3 + 1) / 5 = 1/3, F1 = (2/3 + 4/5) / 5 = 22/75
    assert result["precision_macro"] == pytest.approx(4 / 15)
    assert result["recall_macro"] == pytest.approx(1 / 3)
    assert result["f1_macro"] == pytest.approx(22 / 75)
    # Negative control: averaging over all 6 ids would give P = (4/3) / 6 = 2/9.
    assert result["precision_macro"] != pytest.approx(2 / 9)


def test_num_classes_only_pads_the_lists() -> None:
    # Without num_classes the lists stop at the largest id seen (4); the macro figures are the same.
    padded, plain = precision_recall_f1(PREDS, REFS, num_classes=6), precision_recall_f1(PREDS, REFS)
    assert len(plain["support"]) == 5
    assert plain["f1_macro"] == pytest.approx(padded["f1_macro"])
    with pytest.raises(ValueError, match="out of range"):
        precision_recall_f1(PREDS, REFS, num_classes=4)


def test_multilabel_scores_per_label() -> None:
    refs = [[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    preds = [[1, 0, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    # label 0: TP 2, FP 0, FN 0 -> 1, 1, 1;  label 1: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3
    # label 2: TP 0, FP 1, FN 1 -> 0, 0, 0;  label 3: never true or predicted -> 0s, not in the macro
    result = multilabel_precision_recall_f1(preds, refs)
    assert result["precision_per_class"] == pytest.approx([1, 1, 0, 0])
    assert result["recall_per_class"] == pytest.approx([1, 0.5, 0, 0])
    assert result["f1_per_class"] == pytest.approx([1, 2 / 3, 0, 0])
    assert result["support"] == [2, 2, 1, 0]
    # macro over labels 0-2: P = 2/3, R = 1.5/3 = 1/2, F1 = (1 + 2/3) / 3 = 5/9
    assert result["precision_macro"] == pytest.approx(2 / 3)
    assert result["recall_macro"] == pytest.approx(1 / 2)
    assert result["f1_macro"] == pytest.approx(5 / 9)


# --- confusion matrix ----------------------------------------------------------------------------------------------
def test_confusion_matrix_rows_are_references() -> None:
    matrix = confusion_matrix(PREDS, REFS, num_classes=6)
    assert matrix.shape == (6, 6) and matrix.sum() == 7
    assert matrix[0].tolist() == [2, 1, 0, 0, 0, 0]  # the three true 0s: predicted 0, 0, 1
    assert matrix[2, 0] == 1 and matrix[0, 2] == 0  # true 2 predicted as 0, not the transpose
    assert matrix[3, 4] == 1
    assert np.trace(matrix) / matrix.sum() == pytest.approx(accuracy(PREDS, REFS))


def test_plot_confusion_matrix_writes_png(tmp_path) -> None:
    matrix = confusion_matrix(PREDS, REFS, num_classes=6)
    path = plot_confusion_matrix(matrix, [f"class {k}" for k in range(6)], tmp_path / "confusion.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(matrix, ["only", "two"], tmp_path / "bad.png")


# --- ROC AUC -------------------------------------------------------------------------------------------------------
def test_binary_auc_ties_count_half() -> None:
    # Positive/negative pairs: (0.4 vs 0.1) 1, (0.4 vs 0.4) tie 1/2, (0.8 vs 0.1) 1, (0.8 vs 0.4) 1 -> 3.5 / 4.
    # Negative controls: ties as losses give 3/4 = 0.75, ties as wins 4/4 = 1.0.
    assert binary_roc_auc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]) == 0.875


def test_binary_auc_all_tied_and_reversed() -> None:
    assert binary_roc_auc([0.5] * 4, [0, 1, 0, 1]) == 0.5  # every pair ties -> 4 * 1/2 / 4
    assert binary_roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0  # every positive below every negative


def test_binary_auc_matches_pairwise_count_on_random_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, size=30).astype(float)  # few distinct values: many ties
        refs = rng.integers(0, 2, size=30)
        refs[:2] = [0, 1]
        pos, neg = scores[refs == 1], scores[refs == 0]
        wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
        assert binary_roc_auc(scores, refs) == pytest.approx(wins / (len(pos) * len(neg)))


def test_binary_auc_single_class_raises() -> None:
    with pytest.raises(ValueError, match="both classes.*only class 1"):
        binary_roc_auc([0.2, 0.7], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        binary_roc_auc([0.2, float("nan")], [0, 1])


def test_multilabel_auc_skips_single_class_labels() -> None:
    scores = [[0.9, 0.2, 0.3], [0.1, 0.3, 0.3], [0.8, 0.1, 0.5]]
    refs = [[1, 0, 1], [0, 0, 0], [1, 0, 0]]
    # label 0: positives 0.9, 0.8 above the negative 0.1 -> 1.0
    # label 1: no positive -> skipped
    # label 2: positive 0.3 vs negatives 0.3 (tie, 1/2) and 0.5 (0) -> 0.5 / 2 = 0.25
    # macro = (1.0 + 0.25) / 2 = 0.625 (counting the skipped label as 0.5 would give 0.5833)
    result = multilabel_roc_auc(scores, refs)
    assert result == {"roc_auc": 0.625, "roc_auc_per_label": [1.0, None, 0.25], "num_labels_skipped": 1}
    with pytest.raises(ValueError, match="no label"):
        multilabel_roc_auc([[0.1], [0.2]], [[0], [0]])


# --- evaluate integration ------------------------------------------------------------------------------------------
def test_available_metrics_lists_the_classification_metrics() -> None:
    assert {"accuracy", "f1", "roc_auc"} <= set(available_metrics())
    with pytest.raises(ValueError, match="accuracy"):
        load_metric("no_such_metric")


def test_evaluate_accuracy_both_configs() -> None:
    assert load_offline("accuracy").compute(predictions=PREDS, references=REFS) == {"accuracy": pytest.approx(4 / 7)}
    multilabel = load_offline("accuracy", config_name="multilabel")
    # docstring example: row 0 matches, row 1 differs in its last label -> 1 / 2
    got = multilabel.compute(predictions=[[1, 0, 1], [0, 1, 0]], references=[[1, 0, 1], [0, 1, 1]])
    assert got == {"accuracy": 0.5}


def test_evaluate_f1_matches_logic_and_docstring() -> None:
    f1 = load_offline("f1")
    # same numbers, same keys: the wrapper adds nothing (exact equality: identical arithmetic)
    assert f1.compute(predictions=PREDS, references=REFS, num_classes=6) == precision_recall_f1(PREDS, REFS, 6)
    # docstring example: class 0 P 1 R 1/2, class 1 P 1/2 R 1, class 2 absent -> macro F1 (2/3 + 2/3) / 2
    result = f1.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_classes=3)
    assert result["precision_per_class"] == [1.0, 0.5, 0.0] and result["support"] == [2, 1, 0]
    assert result["f1_macro"] == pytest.approx(2 / 3)
    multilabel = load_offline("f1", config_name="multilabel")
    got = multilabel.compute(predictions=[[1, 0], [1, 1]], references=[[1, 0], [0, 1]])
    # label 0: TP 1 FP 1 -> P 1/2, R 1, F1 2/3; label 1: TP 1 -> 1, 1, 1
    assert got["f1_per_class"] == pytest.approx([2 / 3, 1.0])


def test_evaluate_roc_auc_both_configs() -> None:
    binary = load_offline("roc_auc")
    assert binary.compute(prediction_scores=[0.1, 0.4, 0.4, 0.8], references=[0, 0, 1, 1]) == {"roc_auc": 0.875}
    with pytest.raises(ValueError, match="both classes"):
        binary.compute(prediction_scores=[0.1, 0.4], references=[0, 0])
    multilabel = load_offline("roc_auc", config_name="multilabel")
    got = multilabel.compute(prediction_scores=[[0.9, 0.2], [0.1, 0.3]], references=[[1, 0], [0, 0]])
    assert got == {"roc_auc": 1.0, "roc_auc_per_label": [1.0, None], "num_labels_skipped": 1}


def test_unknown_config_lists_known() -> None:
    with pytest.raises(ValueError, match="multilabel"):
        load_offline("accuracy", config_name="multiclass")
