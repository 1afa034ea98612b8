"""Tests for the VQA accuracy metric: normalisation, leave-one-out scoring and offline loading."""

from __future__ import annotations

import socket

import pytest

from mmft.metrics import available_metrics, load_metric
from mmft.metrics.vqa_normalization import (
    CONTRACTIONS,
    compute_vqa_accuracy,
    normalize_answer,
    sanitize_key,
    vqa_score,
)


def ten_answers(prediction: str, matches: int) -> list[str]:
    """Ten ground-truth answers of which exactly `matches` equal `prediction`."""
    return [prediction] * matches + ["other"] * (10 - matches)


# --- leave-one-out scoring -------------------------------------------------


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        # 0 matches: every 9-answer subset has 0 matches -> min(1, 0/3) = 0.
        (0, 0.0),
        # 1 match: 9 subsets keep it (1/3), 1 drops it (0) -> 9/10 * 1/3 = 0.3.
        (1, 0.3),
        # 2 matches: 8 subsets keep both (2/3), 2 keep one (1/3)
        #   -> (8 * 2/3 + 2 * 1/3) / 10 = (16/3 + 2/3) / 10 = 6/10 = 0.6.
        (2, 0.6),
        # 3 matches: 7 subsets keep all three (3/3 = 1), 3 keep two (2/3)
        #   -> (7 * 1 + 3 * 2/3) / 10 = (7 + 2) / 10 = 0.9.
        (3, 0.9),
        # 4 matches: every subset keeps at least 3 -> min(1, >=3/3) = 1 -> 1.0.
        (4, 1.0),
        # 10 matches: trivially 1.0.
        (10, 1.0),
    ],
)
def test_ten_answers_leave_one_out(matches: int, expected: float) -> None:
    assert vqa_score("cat", ten_answers("cat", matches)) == pytest.approx(expected)


def test_naive_formula_differs_from_leave_one_out() -> None:
    # Negative control: with 3 of 10 matching, the naive min(1, 3/3) gives 1.0,
    # but the official leave-one-out average is (7 * 1 + 3 * 2/3) / 10 = 0.9.
    refs = ten_answers("cat", 3)
    naive = min(1.0, sum(r == "cat" for r in refs) / 3)
    assert naive == 1.0
    assert vqa_score("cat", refs) == pytest.approx(0.9)
    assert vqa_score("cat", refs) != pytest.approx(naive)


def test_two_references_use_leave_one_out_too() -> None:
    # N = 2, both match: each 1-answer subset has 1 match -> min(1, 1/3) = 1/3,
    # average (1/3 + 1/3) / 2 = 1/3 (not exact match, which would give 1).
    assert vqa_score("cat", ["cat", "cat"]) == pytest.approx(1 / 3)
    # N = 2, one matches: subsets give 0 (kept the other) and 1/3 -> 1/6.
    assert vqa_score("cat", ["cat", "dog"]) == pytest.approx(1 / 6)


def test_single_reference_is_exact_match_after_normalisation() -> None:
    # N = 1: 1.0 when normalised strings are equal, else 0.0 (no /3 scaling).
    assert vqa_score("The Cat.", ["cat"]) == 1.0
    assert vqa_score("dog", ["cat"]) == 0.0


def test_references_are_normalised_too() -> None:
    # Three raw references "Two" all normalise to "2": 7 subsets keep all three
    # (1.0) and 3 keep two (2/3) -> (7 + 2) / 10 = 0.9, same as raw "2".
    refs = ["Two", "two.", "TWO"] + ["three"] * 7
    assert vqa_score("2", refs) == pytest.approx(0.9)


# --- normalisation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),  # number word -> digit, after lowercasing
        ("none", "0"),
        ("the dog", "dog"),  # article removed
        ("a dog and an apple", "dog and apple"),
        ("yes.", "yes"),  # trailing period removed
        ("dont", "don't"),  # contraction restored
        ("don't", "don't"),  # already canonical: unchanged
        ("whats", "what's"),
        ("1,000", "1000"),  # comma between digits dropped, not spaced
        ("2.5", "2.5"),  # decimal point kept (a digit follows it)
        ("red!", "red"),  # glued "!" -> space -> stripped away
        ("t-shirt", "t shirt"),  # glued punctuation inside a word -> space
        ("yes, it is", "yes it is"),  # punctuation next to a space -> deleted
        ("  Blue\tand\nwhite ", "blue and white"),  # tab/newline -> space
        ("its", "its"),  # possessive must not become "it's"
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("Two", "2"),
        ("the dog", "dog"),
        ("yes.", "yes"),
        ("dont", "don't"),
        ("1,000", "1000"),
        ("red!", "red"),
    ],
)
def test_normalised_variants_match(prediction: str, reference: str) -> None:
    assert vqa_score(prediction, [reference]) == 1.0


def test_contraction_table_is_reasonably_complete() -> None:
    assert len(CONTRACTIONS) >= 30
    assert all(key == value.replace("'", "") for key, value in CONTRACTIONS.items())


# --- aggregation -------------------------------------------------------------


def test_mean_and_per_type_accuracy() -> None:
    predictions = ["yes", "no", "2"]
    references = [["yes"], ["yes"], ten_answers("2", 1)]
    # per question: 1.0 (exact), 0.0 (exact), 0.3 (1 of 10 -> 9/10 * 1/3)
    # accuracy = (1.0 + 0.0 + 0.3) / 3 = 1.3 / 3; yes/no = (1 + 0) / 2 = 0.5
    result = compute_vqa_accuracy(predictions, references, ["yes/no", "yes/no", "how many"])
    assert result == pytest.approx({"accuracy": 1.3 / 3, "accuracy_yes_no": 0.5, "accuracy_how_many": 0.3})


def test_sanitize_key() -> None:
    assert sanitize_key("yes/no") == "yes_no"
    assert sanitize_key("what color is the") == "what_color_is_the"


def test_without_question_types_only_accuracy() -> None:
    assert compute_vqa_accuracy(["cat"], [["cat"]]) == {"accuracy": 1.0}


def test_empty_input_raises() -> None:
    with pytest.raises(ValueError, match="no predictions to score"):
        compute_vqa_accuracy([], [])


def test_length_mismatches_raise() -> None:
    with pytest.raises(ValueError):
        compute_vqa_accuracy(["a", "b"], [["a"]])
    with pytest.raises(ValueError):
        compute_vqa_accuracy(["a"], [["a"]], question_types=["x", "y"])
    with pytest.raises(ValueError):
        vqa_score("a", [])


def test_bare_string_reference_is_rejected() -> None:
    # "cat" would otherwise be read as three one-letter answers.
    with pytest.raises(TypeError):
        vqa_score("cat", "cat")


# --- evaluate integration -----------------------------------------------------


@pytest.fixture(scope="module")
def metric():
    """The metric loaded through evaluate by local path, with all sockets blocked."""
    pytest.importorskip("evaluate")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    # Loading once per module keeps the (slow) evaluate import cost down.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        return load_metric("vqa_accuracy", keep_in_memory=True)


def test_evaluate_module_matches_pure_function(metric) -> None:
    predictions = ["Two", "no", "cat", "The dog."]
    references = [ten_answers("2", 3), ["yes"], ten_answers("cat", 1), ["dog"]]
    types = ["how many", "yes/no", "what", "what"]
    expected = compute_vqa_accuracy(predictions, references, types)
    # Hand check: (0.9 + 0.0 + 0.3 + 1.0) / 4 = 0.55; what = (0.3 + 1.0) / 2 = 0.65.
    assert expected == pytest.approx(
        {"accuracy": 0.55, "accuracy_how_many": 0.9, "accuracy_yes_no": 0.0, "accuracy_what": 0.65}
    )
    got = metric.compute(predictions=predictions, references=references, question_types=types)
    assert got == pytest.approx(expected)


def test_evaluate_module_docstring_example(metric) -> None:
    # Same inputs as _KWARGS_DESCRIPTION: (0.9 + 0.0) / 2 = 0.45.
    got = metric.compute(
        predictions=["Two", "no"],
        references=[["2"] * 3 + ["3"] * 7, ["yes"]],
        question_types=["how many", "yes/no"],
    )
    assert got == pytest.approx({"accuracy": 0.45, "accuracy_how_many": 0.9, "accuracy_yes_no": 0.0})


def test_evaluate_module_empty_input_raises(metric) -> None:
    with pytest.raises(ValueError, match="no predictions to score"):
        metric.compute(predictions=[], references=[])


def test_load_metric_unknown_name_lists_known() -> None:
    assert "vqa_accuracy" in available_metrics()
    with pytest.raises(ValueError, match="vqa_accuracy"):
        load_metric("no_such_metric")
    with pytest.raises(ValueError):
        load_metric("../metrics")


def test_accuracy_per_answer_type_beside_per_question_type() -> None:
    """Answer types (VQAv2's yes/no, number, other) get their own keys, apart from the question types: 4 of 10
    annotators said "2" (official accuracy 1.0), 2 of 10 said "blue" (0.6), nobody said "no" (0.0)."""
    metric = load_metric("vqa_accuracy")
    got = metric.compute(
        predictions=["2", "blue", "no"],
        references=[["2"] * 4 + ["3"] * 6, ["blue"] * 2 + ["red"] * 8, ["yes"] * 10],
        question_types=["how many", "what color", "is the"],
        answer_types=["number", "other", "yes/no"],
    )
    assert got == pytest.approx(
        {
            "accuracy": (1.0 + 0.6 + 0.0) / 3,
            "accuracy_how_many": 1.0,
            "accuracy_what_color": 0.6,
            "accuracy_is_the": 0.0,
            "accuracy_answer_type_number": 1.0,
            "accuracy_answer_type_other": 0.6,
            "accuracy_answer_type_yes_no": 0.0,
        }
    )
    with pytest.raises(ValueError, match="answer types"):
        compute_vqa_accuracy(["a"], [["a"]], answer_types=["x", "y"])
