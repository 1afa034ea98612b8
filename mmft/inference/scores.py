"""One rule from logits to scores, one top-k and one re-rank order, for the pipelines, `explain`, `mmft search`,
retrieval evaluation and classification evaluation.

- `label_scores`: a single-label model's labels compete (softmax); a multi-label one (and VQAv2's soft-score VQA,
  trained with a binary cross-entropy per answer) scores each label on its own (sigmoid).
- `top_scores`: the k best scores, best first; ties keep the lower index (as `argmax` does), so the answer `explain`
  shows is the pipeline's first one.
- `rerank`: candidates reordered by their re-ranking score (the model's `rerank_score`, `mmft.rerank`), best
  first; ties keep the first stage's order.
"""

from __future__ import annotations

import torch

MULTI_LABEL = "multi_label_classification"


def is_multi_label(config) -> bool:
    """Whether a model scores each label independently (its `problem_type`)."""
    return getattr(config, "problem_type", None) == MULTI_LABEL


def label_scores(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Per-label scores (..., K) of logits (..., K), in float32: sigmoid when multi-label, else softmax."""
    logits = torch.as_tensor(logits).float()
    return logits.sigmoid() if multi_label else logits.softmax(-1)


def match_probability(match_logits: torch.Tensor) -> torch.Tensor:
    """P(match) (B,) of matching logits (B, 2) [no match, match]: the single-label rule's second label."""
    return label_scores(match_logits, multi_label=False)[..., 1]


def top_scores(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the `k` best entries along the last dimension (k capped at its size), best first; ties
    keep the lower index."""
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)[..., : min(k, scores.shape[-1])]
    return scores.gather(-1, order), order


def rerank(candidates: torch.Tensor, scores: torch.Tensor, top: int | None = None) -> torch.Tensor:
    """`candidates` (..., k) in the order of their re-ranking `scores` (..., k), best first (the first `top`)."""
    _, order = top_scores(scores, top or scores.shape[-1])
    return torch.as_tensor(candidates).gather(-1, order)


__all__ = ["MULTI_LABEL", "is_multi_label", "label_scores", "match_probability", "rerank", "top_scores"]
