"""Cross-modal retrieval ranks in chunks (never a full query x gallery matrix) and Recall@K / rsum from them.

The `evaluate` script in `retrieval_recall/` only calls :func:`retrieval_recall`; the ranks come from
:func:`first_match_ranks` (or :func:`retrieval_ranks` for COCO-style data: one image, several captions).

Rank convention, used everywhere here: the rank of a query is 0-based and counts the *incorrect* gallery items
scoring >= the best-scoring correct item. Ties therefore count against the query (pessimistic): a correct item tied
with an incorrect one is ranked behind it, so a model that scores everything equally gets no credit. Correct items
never push each other down, so a query with several correct items (an image with five captions) ranks by its best
one, which is "a hit at K if ANY correct item is in the top K".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "coco_retrieval_targets",
    "first_match_ranks",
    "reranked_ranks",
    "retrieval_ranks",
    "retrieval_recall",
    "top_candidates",
]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _dot(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    return queries @ gallery.T  # (c, D) @ (D, Ng) -> (c, Ng)


def _as_matrix(values, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) tensor, got shape {tuple(tensor.shape)}")
    return tensor


def _targets_csr(query_to_gallery, num_queries: int, num_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Correct gallery indices of every query as (offsets (Nq + 1,), indices): query i owns indices[o[i]:o[i+1]].

    `query_to_gallery` is either one gallery index per query (a 1-D int array, tensor or list of ints) or one
    iterable of gallery indices per query.
    """
    if isinstance(query_to_gallery, torch.Tensor):
        query_to_gallery = query_to_gallery.cpu().numpy()
    if isinstance(query_to_gallery, np.ndarray) and query_to_gallery.ndim == 1:  # one target each: no loop
        indices, counts = query_to_gallery.astype(np.int64), np.ones(len(query_to_gallery), dtype=np.int64)
    else:
        per_query: list[Iterable[int]] = [
            [item] if isinstance(item, (int, np.integer)) else item for item in query_to_gallery
        ]
        lists = [np.unique(np.asarray(list(items), dtype=np.int64)) for items in per_query]  # duplicates harmless
        counts = np.array([len(items) for items in lists], dtype=np.int64)
        indices = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
    if len(counts) != num_queries:
        raise ValueError(f"query_to_gallery has {len(counts)} entries for {num_queries} queries")
    if (counts == 0).any():
        raise ValueError(f"query {int(np.argmin(counts))} has no correct gallery item")
    if indices.size and (indices.min() < 0 or indices.max() >= num_gallery):
        raise ValueError(f"query_to_gallery holds an index outside the gallery [0, {num_gallery})")
    return np.r_[0, np.cumsum(counts)], indices


def first_match_ranks(
    queries,
    gallery,
    query_to_gallery,
    chunk_size: int = 1024,
    score_fn: ScoreFn | None = None,
) -> np.ndarray:
    """0-based rank of each query's best-ranked correct gallery item; an int64 array of shape (Nq,).

    Args:
        queries: (Nq, D) embeddings (tensor or array); scoring runs on their device.
        gallery: (Ng, D) embeddings, moved to the queries' device.
        query_to_gallery: the correct gallery indices of each query: one int per query, or one iterable of ints
            per query (COCO image -> its ~5 captions).
        chunk_size: queries scored at once; peak memory is a few (chunk_size, Ng) blocks (scores, masks).
        score_fn: `score_fn(query_chunk (c, D), gallery (Ng, D)) -> (c, Ng)` similarities, higher is better;
            default dot product (cosine similarity for L2-normalised embeddings).

    Rank = number of incorrect gallery items whose score is >= the best correct item's score (ties count
    against the query). Recall@K is then `mean(ranks < K)`.
    """
    queries, gallery = _as_matrix(queries, "queries"), _as_matrix(gallery, "gallery")
    dtype = torch.promote_types(queries.dtype, gallery.dtype)  # e.g. float32 images with float64 captions
    queries, gallery = queries.to(dtype), gallery.to(queries.device, dtype)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    score_fn = score_fn or _dot
    offsets, indices = _targets_csr(query_to_gallery, len(queries), len(gallery))
    ranks = np.empty(len(queries), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(queries), chunk_size):
            stop = min(start + chunk_size, len(queries))
            ranks[start:stop] = _chunk_ranks(score_fn(queries[start:stop], gallery), offsets[start : stop + 1], indices)
    return ranks


def _chunk_ranks(scores: torch.Tensor, offsets: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Ranks for one block of scores (c, Ng), given the CSR targets of its c queries (offsets are global)."""
    if torch.isnan(scores).any():  # NaN compares False everywhere and would silently give rank 0
        raise ValueError("score_fn returned NaN scores")
    counts = np.diff(offsets)
    rows = torch.as_tensor(np.repeat(np.arange(len(counts)), counts), device=scores.device)
    cols = torch.as_tensor(indices[offsets[0] : offsets[-1]], device=scores.device)
    correct = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)  # (c, Ng)
    correct[rows, cols] = True
    best = scores.masked_fill(~correct, -torch.inf).amax(dim=1, keepdim=True)  # (c, 1)
    ranks = ((scores >= best) & ~correct).sum(dim=1)  # (c,)
    return ranks.cpu().numpy()


def coco_retrieval_targets(caption_to_image: Sequence[int], num_images: int | None = None) -> tuple[np.ndarray, list]:
    """Targets for both directions from the image index of each caption.

    Returns `(text_to_image, image_to_texts)`: an (Nt,) array with each caption's image, and for every image the
    array of its caption indices. Every image needs at least one caption.
    """
    text_to_image = np.asarray(caption_to_image, dtype=np.int64)
    if text_to_image.ndim != 1 or text_to_image.size == 0:
        raise ValueError("caption_to_image must be a non-empty list of image indices, one per caption")
    num_images = int(text_to_image.max()) + 1 if num_images is None else num_images
    if text_to_image.min() < 0 or text_to_image.max() >= num_images:
        raise ValueError(f"caption_to_image holds an image index outside [0, {num_images})")
    order = np.argsort(text_to_image, kind="stable")
    bounds = np.searchsorted(text_to_image[order], np.arange(num_images + 1))
    image_to_texts = [order[bounds[i] : bounds[i + 1]] for i in range(num_images)]
    missing = [i for i, captions in enumerate(image_to_texts) if len(captions) == 0]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no caption, e.g. image {missing[0]}")
    return text_to_image, image_to_texts


def retrieval_ranks(
    image_embeds, text_embeds, caption_to_image: Sequence[int], chunk_size: int = 1024, score_fn: ScoreFn | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`(t2i_ranks, i2t_ranks)` for (Ni, D) image and (Nt, D) caption embeddings; caption k describes image
    `caption_to_image[k]`. The same `score_fn` scores both directions, so it must not depend on which side is the
    query (the default dot product does not)."""
    text_to_image, image_to_texts = coco_retrieval_targets(caption_to_image, num_images=len(image_embeds))
    t2i = first_match_ranks(text_embeds, image_embeds, text_to_image, chunk_size, score_fn)
    i2t = first_match_ranks(image_embeds, text_embeds, image_to_texts, chunk_size, score_fn)
    return t2i, i2t


def top_candidates(queries, gallery, k: int, chunk_size: int = 1024, score_fn: ScoreFn | None = None):
    """The `k` best gallery items of each query, best first: `(scores (Nq, k), indices (Nq, k))`, in chunks of
    `chunk_size` queries (never a full query x gallery matrix). `k` is capped at the gallery size."""
    queries, gallery = _as_matrix(queries, "queries"), _as_matrix(gallery, "gallery")
    dtype = torch.promote_types(queries.dtype, gallery.dtype)
    queries, gallery = queries.to(dtype), gallery.to(queries.device, dtype)
    k, score_fn = min(k, len(gallery)), score_fn or _dot
    scores, indices = [], []
    with torch.no_grad():
        for start in range(0, len(queries), chunk_size):
            best = score_fn(queries[start : start + chunk_size], gallery).topk(k, dim=1)  # (c, k)
            scores.append(best.values.cpu())
            indices.append(best.indices.cpu())
    return torch.cat(scores), torch.cat(indices)


def reranked_ranks(first_ranks, candidates, candidate_scores, query_to_gallery, num_gallery: int) -> np.ndarray:
    """0-based ranks after re-scoring each query's top-k candidates; an int64 array (Nq,).

    The new order is the k candidates sorted by `candidate_scores` (Nq, k), then the rest of the gallery in its
    first order. A query with a correct item among its candidates ranks by the best-scoring one, counting the
    incorrect candidates that score >= it (ties count against the query, as in `first_match_ranks`); a query with
    none keeps its first rank, which is >= k since every candidate then beat every correct item.
    """
    candidates = np.asarray(torch.as_tensor(candidates).cpu(), dtype=np.int64)
    scores = torch.as_tensor(candidate_scores).cpu().double().numpy()
    if candidates.shape != scores.shape or candidates.ndim != 2:
        raise ValueError(f"candidates {candidates.shape} and candidate_scores {scores.shape} must both be (Nq, k)")
    if np.isnan(scores).any():
        raise ValueError("candidate_scores holds NaN")
    offsets, indices = _targets_csr(query_to_gallery, len(candidates), num_gallery)
    # (query, gallery item) pairs as one int64 key each, so "is this candidate correct" is one vectorised isin.
    target_keys = np.repeat(np.arange(len(candidates)), np.diff(offsets)) * num_gallery + indices
    candidate_keys = np.arange(len(candidates))[:, None] * num_gallery + candidates  # (Nq, k)
    correct = np.isin(candidate_keys, target_keys)
    best = np.where(correct, scores, -np.inf).max(axis=1, keepdims=True)  # (Nq, 1)
    ranks = ((scores >= best) & ~correct).sum(axis=1)
    return np.where(correct.any(axis=1), ranks, np.asarray(first_ranks, dtype=np.int64)).astype(np.int64)


def _direction(ranks, name: str, ks: Sequence[int]) -> tuple[dict[str, float], float]:
    """Recall@K per K and the 1-based median rank of one direction's 0-based ranks."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"{name} must be a non-empty list of ranks, one per query")
    if ranks.min() < 0:
        raise ValueError(f"{name} holds a negative rank; ranks are 0-based")
    recalls = {f"{name[:3]}_recall@{k}": float(np.mean(ranks < k)) for k in ks}
    return recalls, float(np.median(ranks + 1))  # MedR is reported 1-based in the literature


def retrieval_recall(t2i_ranks, i2t_ranks, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K of both directions (fractions in [0, 1]), rsum (their sum, in [0, 2 * len(ks)]) and 1-based MedR.

    Keys: `t2i_recall@K`, `i2t_recall@K` for each K in `ks`, `rsum`, `t2i_median_rank`, `i2t_median_rank`.
    A query is a hit at K when its 0-based rank is < K.
    """
    ks = list(dict.fromkeys(int(k) for k in ks))  # a repeated K would count twice in rsum
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    t2i, t2i_median = _direction(t2i_ranks, "t2i_ranks", ks)
    i2t, i2t_median = _direction(i2t_ranks, "i2t_ranks", ks)
    return {
        **t2i,
        **i2t,
        "rsum": sum(t2i.values()) + sum(i2t.values()),
        "t2i_median_rank": t2i_median,
        "i2t_median_rank": i2t_median,
    }
