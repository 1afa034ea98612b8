"""How the matching head's verdict on a candidate becomes its re-ranking score: name -> function.

Both inputs are logits of one (query, candidate) pair: `match` is the matching head's log-odds of a match and
`similarity` the dual encoder's scaled cosine similarity (the logit its contrastive softmax ranks by). Summing them
treats the two as independent experts (a product of their probabilities), as BLIP's evaluation adds the contrastive
similarity to the matching score; `match` alone is ALBEF's re-ranking. A new rule is one function and one line.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

RerankScore = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def match_plus_similarity(match: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    return match + similarity


def match_only(match: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    return match


RERANK_SCORES: dict[str, RerankScore] = {"match+similarity": match_plus_similarity, "match": match_only}

__all__ = ["RERANK_SCORES", "RerankScore"]
