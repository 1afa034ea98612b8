"""Tests for retrieval ranks (chunked, ties against the query, several captions per image) and Recall@K / rsum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_metrics import load_offline

from mmft.metrics import available_metrics
from mmft.metrics.ranking import coco_retrieval_targets, first_match_ranks, retrieval_ranks, retrieval_recall


def brute_force_ranks(queries: np.ndarray, gallery: np.ndarray, targets: list[list[int]]) -> np.ndarray:
    """The definition, on the full score matrix: incorrect items scoring >= the best correct one."""
    scores = queries @ gallery.T
    ranks = []
    for row, correct in zip(scores, targets):
        is_correct = np.zeros(len(gallery), dtype=bool)
        is_correct[correct] = True
        ranks.append(int(np.sum(row[~is_correct] >= row[is_correct].max())))
    return np.array(ranks)


# --- hand-computed ranks -------------------------------------------------------------------------------------------
def test_one_target_per_query_ties_count_against() -> None:
    # With an identity gallery, each query's score row is the query itself.
    gallery = torch.eye(3, dtype=torch.float64)
    queries = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # target 0: 0.9, nothing incorrect >= 0.9               -> rank 0
            [0.5, 0.5, 0.2],  # target 1: 0.5, item 0 ties at 0.5                      -> rank 1 (not 0)
            [0.3, 0.8, 0.1],  # target 2: 0.1, items 0 (0.3) and 1 (0.8) are above      -> rank 2
            [0.2, 0.2, 0.2],  # target 0: everything ties                               -> rank 2
        ],
        dtype=torch.float64,
    )
    assert first_match_ranks(queries, gallery, [0, 1, 2, 0]).tolist() == [0, 1, 2, 2]
    # a 1-D array/tensor of targets means the same as a list of ints
    assert first_match_ranks(queries, gallery, torch.tensor([0, 1, 2, 0])).tolist() == [0, 1, 2, 2]


def test_several_correct_items_rank_by_the_best() -> None:
    gallery = torch.eye(5, dtype=torch.float64)  # five captions; identity again
    queries = torch.tensor(
        [
            # correct {0, 1, 2}: best correct is caption 1 (0.7); incorrect >= 0.7: caption 3 (0.9)  -> rank 1.
            # (Ranking by the first listed caption, 0 at 0.1, would give 2.)
            [0.1, 0.7, 0.3, 0.9, 0.2],
            # correct {3, 4}: best is caption 4 (0.6); incorrect >= 0.6: caption 0 (0.8) and the ties 1, 2  -> rank 3.
            [0.8, 0.6, 0.6, 0.5, 0.6],
            # correct {0, 3}: caption 0 (0.9) is above everything; the other correct one never counts  -> rank 0.
            [0.9, 0.1, 0.2, 0.95, 0.3],
        ],
        dtype=torch.float64,
    )
    targets = [[0, 1, 2], [3, 4], [0, 3]]
    assert first_match_ranks(queries, gallery, targets).tolist() == [1, 3, 0]


def test_retrieval_ranks_both_directions() -> None:
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    captions = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [1.0, 2.0], [3.0, 1.0]])
    caption_to_image = [0, 0, 1, 1, 1]
    # scores image x caption: image 0 -> [2, 1, 0, 1, 3]; image 1 -> [0, 1, 3, 2, 1]
    # t2i: c0 2 vs 0 -> 0; c1 1 vs 1 tie -> 1; c2 3 vs 0 -> 0; c3 2 vs 1 -> 0; c4 1 vs 3 -> 1
    # i2t: image 0, captions {0, 1}: best 2; incorrect {0, 1, 3} -> only c4 (3) >= 2 -> 1
    #      image 1, captions {2, 3, 4}: best 3; incorrect {2, 1} -> none >= 3 -> 0
    t2i, i2t = retrieval_ranks(images, captions, caption_to_image)
    assert t2i.tolist() == [0, 1, 0, 0, 1]
    assert i2t.tolist() == [1, 0]
    assert t2i.dtype == np.int64


def test_coco_targets() -> None:
    text_to_image, image_to_texts = coco_retrieval_targets([1, 0, 1, 2, 0])
    assert text_to_image.tolist() == [1, 0, 1, 2, 0]
    assert [t.tolist() for t in image_to_texts] == [[1, 4], [0, 2], [3]]
    with pytest.raises(ValueError, match="no caption"):
        coco_retrieval_targets([0, 2])  # image 1 has no caption


# --- chunking ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_equals_unchunked_on_random_data(chunk_size: int) -> None:
    rng = np.random.default_rng(0)
    images, captions = rng.normal(size=(40, 16)), rng.normal(size=(200, 16))
    caption_to_image = np.repeat(np.arange(40), 5)
    rng.shuffle(caption_to_image)
    _, image_to_texts = coco_retrieval_targets(caption_to_image)
    i2t = first_match_ranks(images, captions, image_to_texts, chunk_size=chunk_size)
    t2i = first_match_ranks(captions, images, caption_to_image, chunk_size=chunk_size)
    assert i2t.tolist() == first_match_ranks(images, captions, image_to_texts, chunk_size=10**6).tolist()
    assert i2t.tolist() == brute_force_ranks(images, captions, [t.tolist() for t in image_to_texts]).tolist()
    assert t2i.tolist() == brute_force_ranks(captions, images, [[i] for i in caption_to_image]).tolist()


def test_chunked_equals_unchunked_with_many_ties() -> None:
    # Small integer embeddings: exact dot products, lots of exact ties, so any chunk-dependent tie handling shows.
    rng = np.random.default_rng(1)
    queries, gallery = rng.integers(0, 3, size=(90, 4)).astype(np.float32), rng.integers(0, 3, size=(30, 4))
    targets = [rng.choice(30, size=rng.integers(1, 4), replace=False).tolist() for _ in range(90)]
    expected = brute_force_ranks(queries, gallery.astype(np.float32), targets)
    for chunk_size in (1, 4, 89, 90):
        got = first_match_ranks(queries, gallery.astype(np.float32), targets, chunk_size=chunk_size)
        assert got.tolist() == expected.tolist()
    # mixed dtypes (float32 queries, float64 gallery) are promoted, not refused
    assert first_match_ranks(queries, gallery.astype(np.float64), targets).tolist() == expected.tolist()


def test_score_blocks_never_exceed_the_chunk() -> None:
    shapes = []

    def recording_dot(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(q.shape))
        return q @ g.T

    queries, gallery = torch.randn(50, 8), torch.randn(30, 8)
    first_match_ranks(queries, gallery, list(range(30)) + list(range(20)), chunk_size=16, score_fn=recording_dot)
    assert [rows for rows, _ in shapes] == [16, 16, 16, 2]


def test_custom_score_fn_is_used() -> None:
    # Negative squared distance ranks query [0, 0] nearest to [1, 0], although its dot product is 0 with both.
    queries, gallery = torch.zeros(1, 2), torch.tensor([[1.0, 0.0], [5.0, 5.0]])

    def neg_distance(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return -(torch.cdist(q, g) ** 2)

    assert first_match_ranks(queries, gallery, [0], score_fn=neg_distance).tolist() == [0]
    assert first_match_ranks(queries, gallery, [0]).tolist() == [1]  # dot product: 0 vs 0 tie, counted against


@pytest.mark.parametrize(
    ("targets", "message"),
    [([[0], []], "no correct"), ([0, 3], "outside the gallery"), ([0], "entries for 2 queries")],
)
def test_bad_targets_raise(targets, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        first_match_ranks(torch.randn(2, 4), torch.randn(3, 4), targets)


def test_nan_scores_raise() -> None:
    queries = torch.tensor([[float("nan"), 0.0]])
    with pytest.raises(ValueError, match="NaN"):
        first_match_ranks(queries, torch.eye(2), [0])


# --- Recall@K and the evaluate module ------------------------------------------------------------------------------
def test_retrieval_recall_from_hand_ranks() -> None:
    # t2i ranks [0, 1, 0, 0, 1]: R@1 = 3/5, R@5 = R@10 = 1; i2t ranks [1, 0]: R@1 = 1/2, R@5 = R@10 = 1
    # rsum = 0.6 + 1 + 1 + 0.5 + 1 + 1 = 5.1; MedR (1-based) t2i median [1, 2, 1, 1, 2] = 1, i2t [2, 1] -> 1.5
    result = retrieval_recall([0, 1, 0, 0, 1], [1, 0])
    assert result == pytest.approx(
        {
            "t2i_recall@1": 0.6,
            "t2i_recall@5": 1.0,
            "t2i_recall@10": 1.0,
            "i2t_recall@1": 0.5,
            "i2t_recall@5": 1.0,
            "i2t_recall@10": 1.0,
            "rsum": 5.1,
            "t2i_median_rank": 1.0,
            "i2t_median_rank": 1.5,
        }
    )


def test_rank_equal_to_k_is_a_miss() -> None:
    # 0-based rank 5 means five items above: outside the top 5 (an off-by-one would count it).
    assert retrieval_recall([5], [4], ks=(5,)) == pytest.approx(
        {"t2i_recall@5": 0.0, "i2t_recall@5": 1.0, "rsum": 1.0, "t2i_median_rank": 6.0, "i2t_median_rank": 5.0}
    )
    assert retrieval_recall([0], [0], ks=(1, 1))["rsum"] == 2.0  # a repeated K counts once
    with pytest.raises(ValueError, match="negative"):
        retrieval_recall([-1], [0])


@pytest.fixture(scope="module")
def metric():
    return load_offline("retrieval_recall")


def test_evaluate_module_docstring_example(metric) -> None:
    assert "retrieval_recall" in available_metrics()
    # t2i [0, 3, 7, 20]: R@1 1/4, R@5 2/4, MedR median(1, 4, 8, 21) = 6; i2t [0, 1]: R@1 1/2, R@5 1, MedR 1.5
    got = metric.compute(t2i_ranks=[0, 3, 7, 20], i2t_ranks=[0, 1], ks=(1, 5))
    assert got == {
        "t2i_recall@1": 0.25,
        "t2i_recall@5": 0.5,
        "i2t_recall@1": 0.5,
        "i2t_recall@5": 1.0,
        "rsum": 2.25,
        "t2i_median_rank": 6.0,
        "i2t_median_rank": 1.5,
    }


def test_evaluate_module_accumulates_t2i_batches(metric) -> None:
    metric.add_batch(t2i_ranks=[0, 1, 0])
    metric.add_batch(t2i_ranks=[0, 1])
    assert metric.compute(i2t_ranks=[1, 0]) == pytest.approx(retrieval_recall([0, 1, 0, 0, 1], [1, 0]))
    with pytest.raises(ValueError, match="i2t_ranks"):
        metric.compute(t2i_ranks=[0])
