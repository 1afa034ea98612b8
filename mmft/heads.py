"""Heads that read the bridge's pooled summary: small modules a task model puts on top of `MMFTModel`."""

from __future__ import annotations

from torch import nn


class ClassificationHead(nn.Sequential):
    """MLP over the pooled summary -> one logit per label: Linear, GELU, LayerNorm, Linear."""

    def __init__(self, pooled_size: int, num_labels: int, layer_norm_eps: float = 1e-6) -> None:
        super().__init__(
            nn.Linear(pooled_size, pooled_size),
            nn.GELU(),
            nn.LayerNorm(pooled_size, eps=layer_norm_eps),
            nn.Linear(pooled_size, num_labels),
        )


__all__ = ["ClassificationHead"]
