"""Attention heatmaps: where in the image the question's tokens look, per bridge layer.

Reads the text->image cross-attention weights that co_attention / cross_attention bridges return with
`output_attentions=True`, averages them over heads and over the question's (non-padding) tokens, and lays each
layer's map over the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .bridge import BRIDGES
from .image_utils import to_rgb
from .inference.scores import is_multi_label, label_scores, top_scores

MAX_PREFIX_TOKENS = 8  # class/register tokens a ViT may put before its patch tokens


@dataclass
class Explanation:
    answer: str
    score: float
    maps: list[np.ndarray]  # one (h, w) map per bridge layer, each summing to 1 over the patch tokens


def _grid(num_tokens: int, grid: tuple[int, int] | None) -> tuple[int, tuple[int, int]]:
    """(prefix tokens to drop, (h, w)) of the image tokens: the tower's feature-map grid, or a square of patches."""
    if grid is not None:
        return num_tokens - grid[0] * grid[1], tuple(grid)
    side = math.isqrt(num_tokens)
    prefix = num_tokens - side * side
    if prefix > MAX_PREFIX_TOKENS:
        raise ValueError(f"cannot lay {num_tokens} image tokens on a square grid; the vision tower gives no grid")
    return prefix, (side, side)


@torch.no_grad()
def explain(model, processor, image: Image.Image, question: str) -> Explanation:
    """The predicted answer and the per-layer text->image attention maps for one image and question."""
    if not BRIDGES[model.config.bridge].uses_attention:
        attention = ", ".join(name for name, cls in BRIDGES.items() if cls.uses_attention)
        raise ValueError(
            f"this model's bridge {model.config.bridge!r} has no cross-attention to show; "
            f"heatmaps need one of: {attention}"
        )
    inputs = processor(images=to_rgb(image), text=question).to(model.device)
    outputs = model(**inputs, output_attentions=True)
    scores = label_scores(outputs.logits[0], is_multi_label(model.config))  # as the pipelines score
    (score,), (best,) = top_scores(scores, 1)
    mask = inputs["attention_mask"][0].bool()  # (Nt,)
    maps = []
    for layer in outputs.cross_attentions:  # (1, H, Nt, Nv)
        weights = layer[0].float().mean(0)[mask].mean(0)  # heads, then real question tokens -> (Nv,)
        prefix, (height, width) = _grid(weights.numel(), outputs.image_grid)
        patch = weights[prefix:]
        maps.append((patch / patch.sum()).reshape(height, width).cpu().numpy())
    return Explanation(model.config.id2label[int(best)], float(score), maps)


def plot_explanation(image: Image.Image, question: str, explanation: Explanation, out: str | Path) -> Path:
    """One panel with the image, then one per bridge layer with its attention over the image; answer in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = np.asarray(to_rgb(image))
    extent = (0, image.shape[1], image.shape[0], 0)  # stretch each (h, w) map over the whole image
    panels = 1 + len(explanation.maps)
    figure = Figure(figsize=(3 * panels, 3.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(image, extent=extent)
    axes[0].set_title("image", fontsize=9)
    for index, (ax, heat) in enumerate(zip(axes[1:], explanation.maps), start=1):
        ax.imshow(image, extent=extent)
        ax.imshow(heat, cmap="jet", alpha=0.5, extent=extent, interpolation="bilinear")
        ax.set_title(f"bridge layer {index}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    figure.suptitle(f"Q: {question}\nA: {explanation.answer} ({explanation.score:.2f})", fontsize=10)
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    return out


__all__ = ["Explanation", "explain", "plot_explanation"]
