"""Heads that read the bridge's pooled summary or the towers' pooled features: small modules a task model puts on
top of `MMFTModel`."""

from __future__ import annotations

import math

import torch
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


class LogitScale(nn.Module):
    """CLIP's learnable temperature, kept as log(1 / T); `forward()` gives the scale 1 / T, at most 100."""

    MAX_SCALE = 100.0

    def __init__(self, init_value: float) -> None:
        super().__init__()
        self.init_value = init_value
        self.log_scale = nn.Parameter(torch.tensor(float(init_value)))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.log_scale.fill_(self.init_value)

    def forward(self) -> torch.Tensor:
        # A clamp rather than CLIP's in-place clip of the parameter: same effect, and nothing to do after each step.
        return self.log_scale.clamp(max=math.log(self.MAX_SCALE)).exp()


class ContrastiveHead(nn.Module):
    """The dual encoder's part: a projection per tower into the shared embedding space, and the temperature."""

    def __init__(self, width: int, projection_dim: int, logit_scale_init_value: float) -> None:
        super().__init__()
        self.image_projection = nn.Linear(width, projection_dim, bias=False)
        self.text_projection = nn.Linear(width, projection_dim, bias=False)
        self.logit_scale = LogitScale(logit_scale_init_value)


__all__ = ["ClassificationHead", "ContrastiveHead", "LogitScale"]
