"""Fixed 2-D sin-cos positions for the tokens of a vision tower's feature map (CNNs carry no position of their own)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_2d(height: int, width: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed 2-D sin-cos positions (MAE-style), (H*W, dim), row-major like a flattened feature map."""
    quarter = dim // 4
    freqs = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    angles_y = ys.flatten()[:, None] * freqs  # (H*W, dim/4)
    angles_x = xs.flatten()[:, None] * freqs
    table = torch.cat([angles_y.sin(), angles_y.cos(), angles_x.sin(), angles_x.cos()], dim=1)
    return F.pad(table, (0, dim - table.shape[1])).to(dtype)  # (H*W, dim)


__all__ = ["sincos_2d"]
