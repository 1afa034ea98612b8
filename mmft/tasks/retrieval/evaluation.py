"""Retrieval evaluation: embed a gallery once, rank by the dual encoder, re-rank each query's top-k by matching.

The eval split holds images with one or more captions. Every caption is a text->image query and every image an
image->text query (a hit at K when any of its captions ranks within K, the COCO convention). Similarities are
scored in chunks of queries (`mmft.metrics.ranking`), never as a full images x captions matrix; the token states
the matching head needs are kept per batch (`TokenBank`), so memory grows with the gallery, not its square.
With several processes each one embeds the whole split (cheap next to re-ranking) and re-ranks its share of queries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ...metrics import load_metric
from ...metrics.ranking import coco_retrieval_targets, reranked_ranks, retrieval_ranks, top_candidates

KS = (1, 5, 10)
TOP_RECORDED = 5  # candidates listed per query in predictions.jsonl


class TokenBank:
    """Token states of many items, stored in the batches they were computed in (each padded to its own longest row),
    so a gallery costs no padding to a global length; `take(indices)` returns rows padded to their own longest.
    Items are numbered 0..N-1 and may be added in any order."""

    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []  # per batch (b, L_b, D)
        self.masks: list[torch.Tensor] = []  # per batch (b, L_b)
        self._places: list[tuple[int, int, int, int]] = []  # (item, batch, row, length)
        self._index: np.ndarray | None = None  # (N, 3): batch, row, length of each item

    def add(self, items: Sequence[int], states: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        batch = len(self.states)
        mask = mask if mask is not None else torch.ones(states.shape[:2], dtype=torch.long)
        self.states.append(states.detach().float().cpu())
        self.masks.append(mask.detach().cpu())
        lengths = mask.sum(dim=1).tolist()
        self._places.extend((int(item), batch, row, int(lengths[row])) for row, item in enumerate(items))
        self._index = None

    def _lookup(self) -> np.ndarray:
        if self._index is None:
            places = np.array(sorted(self._places), dtype=np.int64)  # items are 0..N-1, so row i is item i
            self._index = places[:, 1:]
        return self._index

    def select(self, items: Sequence[int]) -> TokenBank:
        """A bank of the given items only, renumbered 0..len(items)-1 (the stored batches are shared, not copied)."""
        index = self._lookup()
        bank = TokenBank()
        bank.states, bank.masks = self.states, self.masks
        bank._places = [(new, *map(int, index[old])) for new, old in enumerate(items)]
        return bank

    def take(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (n, L, D), mask (n, L)) of the items, L the longest of them."""
        batch, row, length = self._lookup()[np.asarray(indices, dtype=np.int64)].T
        longest, width = int(length.max()), self.states[0].shape[-1]
        states = torch.zeros(len(batch), longest, width)
        mask = torch.zeros(len(batch), longest, dtype=torch.long)
        for b in np.unique(batch):
            out = torch.as_tensor(np.nonzero(batch == b)[0])
            rows = torch.as_tensor(row[out.numpy()])
            keep = min(longest, self.states[b].shape[1])  # every real token of these rows lies within both
            states[out, :keep] = self.states[b][rows, :keep]
            mask[out, :keep] = self.masks[b][rows, :keep]
        return states, mask


@dataclass
class Embedded:
    """One side of the gallery: L2-normalised embeddings (N, P) and the token states the matching head reads."""

    embeds: torch.Tensor
    bank: TokenBank

    def subset(self, items: Sequence[int]) -> Embedded:
        return Embedded(self.embeds[list(items)], self.bank.select(items))


def embed_images(model, dataset, batch_size: int, device: torch.device, workers: int = 0) -> Embedded:
    """Images of `dataset` (rows with `pixel_values`, e.g. under the task's transform) in order."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=lambda rows: torch.stack([row["pixel_values"] for row in rows]),
    )
    embeds, bank, done = [], TokenBank(), 0
    for pixels in loader:
        states, _ = model.core.image_states(pixels.to(device))  # (b, Nv, D)
        embeds.append(F.normalize(model.image_embedding(states), dim=-1).float().cpu())
        bank.add(range(done, done + len(pixels)), states)
        done += len(pixels)
    return Embedded(torch.cat(embeds), bank)


def embed_texts(model, texts: list[str], tokenize: Callable, batch_size: int, device: torch.device) -> Embedded:
    """Texts in order; batched by length (less padding), results put back in the texts' order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    embeds = torch.empty(0)
    bank = TokenBank()
    for start in range(0, len(order), batch_size):
        items = order[start : start + batch_size]
        encoded = tokenize([texts[i] for i in items])
        ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
        states = model.core.text_states(ids, mask)  # (b, Nt, D)
        batch = F.normalize(model.text_embedding(states, mask), dim=-1).float().cpu()
        if embeds.numel() == 0:
            embeds = torch.empty(len(texts), batch.shape[1])
        embeds[items] = batch
        bank.add(items, states, mask)
    return Embedded(embeds, bank)


def shard_rows(compute: Callable[[int, int], torch.Tensor], count: int, accelerator=None) -> torch.Tensor:
    """`compute(start, stop)` over rows [0, count), split into contiguous shards across processes and gathered."""
    processes = accelerator.num_processes if accelerator is not None else 1
    if processes == 1:
        return compute(0, count)
    per = math.ceil(count / processes)
    start = min(count, accelerator.process_index * per)
    stop = min(count, start + per)
    local = compute(start, stop)  # (stop - start, k)
    padded = torch.zeros(per, *local.shape[1:], dtype=local.dtype)
    padded[: stop - start] = local
    return accelerator.gather(padded.to(accelerator.device)).cpu()[:count]  # shards are full but the last


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
        order = torch.argsort(self.scores[query], descending=True, stable=True)
        return self.candidates[query][order][:top].tolist()


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
            )  # bound now: shard_rows calls it before the loop moves on
            scores = shard_rows(rows, len(candidates), accelerator)
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
    "shard_rows",
]
