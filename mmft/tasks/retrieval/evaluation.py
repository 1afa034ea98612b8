"""Retrieval evaluation: embed a gallery once, rank by the dual encoder, re-rank each query's top-k by matching.

The eval split holds images with one or more captions. Every caption is a text->image query and every image an
image->text query (a hit at K when any of its captions ranks within K, the COCO convention). Similarities are
scored in chunks of queries (`mmft.metrics.ranking`), never as a full images x captions matrix; the token states
the matching head needs are kept per batch (`TokenBank`), so memory grows with the gallery, not its square.
With several processes each one embeds the whole split (cheap next to re-ranking) and re-ranks its share of queries
(`mmft.inference.sharded.map_and_gather`); the embeddings come from the one embedding path (`mmft.inference`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from ...inference.embeddings import Embedded, TokenBank, embed_images, embed_texts
from ...inference.scores import rerank
from ...inference.sharded import map_and_gather
from ...metrics import load_metric
from ...metrics.ranking import coco_retrieval_targets, reranked_ranks, retrieval_ranks, top_candidates

KS = (1, 5, 10)
TOP_RECORDED = 5  # candidates listed per query in predictions.jsonl


def rerank_scores(
    model,
    queries: Embedded,
    gallery: Embedded,
    candidates: torch.Tensor,
    similarities: torch.Tensor,
    text_queries: bool,
    pair_batch: int,
    device: torch.device,
    start: int,
    stop: int,
) -> torch.Tensor:
    """Re-ranking scores (stop - start, k) of queries [start, stop) with their candidates (gallery indices) and the
    candidates' dual-encoder cosine similarities (same shape), by the model's `rerank_score`."""
    k = candidates.shape[1]
    scores = torch.empty(stop - start, k)
    step = max(1, pair_batch // k)
    for first in range(start, stop, step):
        last = min(stop, first + step)
        query_items = torch.arange(first, last).repeat_interleave(k)
        gallery_items = candidates[first:last].flatten()
        texts, images = (query_items, gallery_items) if text_queries else (gallery_items, query_items)
        text_states, mask = (queries if text_queries else gallery).bank.take(texts)
        image_states, _ = (gallery if text_queries else queries).bank.take(images)
        logits = model.match_states(image_states.to(device), text_states.to(device), mask.to(device))
        pair_scores = model.rerank_score(logits, similarities[first:last].flatten().to(device))
        scores[first - start : last - start] = pair_scores.float().cpu().view(last - first, k)
    return scores


@dataclass
class Direction:
    """One retrieval direction's results: first-stage ranks, the re-ranked candidates and the final ranks."""

    dual_ranks: np.ndarray
    candidates: torch.Tensor  # (Nq, k) gallery indices, best dual score first
    scores: torch.Tensor  # (Nq, k) re-ranking scores (the model's `rerank_score`), or similarities without re-ranking
    rerank_ranks: np.ndarray

    def reranked(self, query: int, top: int = TOP_RECORDED) -> list[int]:
        return rerank(self.candidates[query], self.scores[query], top).tolist()


@dataclass
class RetrievalResult:
    metrics: dict[str, float]
    t2i: Direction
    i2t: Direction


def recall_metrics(t2i: np.ndarray, i2t: np.ndarray, stage: str, prefix: str) -> dict[str, float]:
    """Recall@1/5/10 both ways, rsum and median ranks from the local `retrieval_recall` evaluate module."""
    values = load_metric("retrieval_recall").compute(t2i_ranks=t2i.tolist(), i2t_ranks=i2t.tolist(), ks=KS)
    return {f"{prefix}_{stage}_{key}": float(value) for key, value in values.items()}


def evaluate_retrieval(
    model,
    images: Embedded,
    texts: Embedded,
    caption_to_image: Sequence[int],
    rerank_k: int,
    pair_batch: int,
    device: torch.device,
    accelerator=None,
    chunk_size: int = 1024,
    prefix: str = "test",
) -> RetrievalResult:
    """Dual-encoder ranks of both directions, then the top `rerank_k` of every query re-ranked by the model's
    `rerank_score` (matching head, plus the similarity by default; `rerank_k=0`: the dual encoder alone, its top
    candidates kept for the records)."""
    start = time.perf_counter()
    t2i_dual, i2t_dual = retrieval_ranks(images.embeds, texts.embeds, caption_to_image, chunk_size)
    text_to_image, image_to_texts = coco_retrieval_targets(caption_to_image, len(images.embeds))
    metrics = recall_metrics(t2i_dual, i2t_dual, "dual", prefix)
    dual_seconds = time.perf_counter() - start
    directions = {}
    for name, queries, gallery, dual, targets, text_queries in (
        ("t2i", texts, images, t2i_dual, text_to_image, True),
        ("i2t", images, texts, i2t_dual, image_to_texts, False),
    ):
        scores, candidates = top_candidates(queries.embeds, gallery.embeds, rerank_k or TOP_RECORDED, chunk_size)
        ranks = dual
        if rerank_k:
            similarities = scores
            rows = partial(
                rerank_scores, model, queries, gallery, candidates, similarities, text_queries, pair_batch, device
            )  # bound now: map_and_gather calls it before the loop moves on
            scores = map_and_gather(len(candidates), rows, accelerator)
            ranks = reranked_ranks(dual, candidates, scores, targets, len(gallery.embeds))
        directions[name] = Direction(dual, candidates, scores, ranks)
    metrics[f"{prefix}_dual_seconds"] = dual_seconds
    if rerank_k:
        metrics.update(recall_metrics(directions["t2i"].rerank_ranks, directions["i2t"].rerank_ranks, "rerank", prefix))
        metrics.update(
            {
                f"{prefix}_rerank_k": float(candidates.shape[1]),
                f"{prefix}_rerank_seconds": time.perf_counter() - start - dual_seconds,
            }
        )
    return RetrievalResult(metrics, directions["t2i"], directions["i2t"])


__all__ = [
    "Direction",
    "Embedded",
    "RetrievalResult",
    "TokenBank",
    "embed_images",
    "embed_texts",
    "evaluate_retrieval",
    "rerank_scores",
]
