"""What mmft models return: `ModelOutput` dataclasses, so outputs index by name or position, convert with
`to_tuple()` (`return_dict=False`) and pass through `torch.export` / `torch.compile` as pytrees."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class MMFTModelOutput(ModelOutput):
    """
    text_states (`(B, Nt, D)`), image_states (`(B, Nv, D)`): both streams after the bridge.
    pooled (`(B, P)`): the fused summary the task heads read.
    hidden_states (with `output_hidden_states=True`): `(text, image)`. Each is a tuple: the tower's tokens projected
        to the bridge width (the bridge's input, `(B, N, D)`), then the stream after each bridge layer that updates it
        (before the bridge's final LayerNorm). A co-attention bridge of L layers gives L + 1 of each; a
        cross-attention bridge L + 1 text and 1 image (it leaves the image stream as it is); concat / product 1 each.
    attentions (with `output_attentions=True`): `(text, image)`, each stream's self-attention weights per bridge layer,
        `(B, H, Nt, Nt)` / `(B, H, Nv, Nv)`.
    cross_attentions (with `output_attentions=True`): text->image weights per bridge layer, `(B, H, Nt, Nv)`.
    image_cross_attentions (with `output_attentions=True`, co-attention only): image->text weights, `(B, H, Nv, Nt)`.
        Bridges without attention (concat, product) return no weights.
    image_grid (`(H, W)`): the feature-map shape image tokens came from, for heatmaps; `None` for ViT-like towers.
    """

    text_states: torch.Tensor | None = None
    image_states: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    image_grid: tuple[int, int] | None = None
    hidden_states: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    attentions: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    image_cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class MMFTClassifierOutput(ModelOutput):
    """
    loss (with `labels`), logits (`(B, num_labels)`). With `output_attentions` or `output_hidden_states` (argument or
    config field) also `pooled`, `image_grid` and the fields of `MMFTModelOutput` they ask for; otherwise only loss and
    logits, because the Trainer gathers every tensor an output holds during evaluation.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    image_grid: tuple[int, int] | None = None
    hidden_states: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    attentions: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    image_cross_attentions: tuple[torch.Tensor, ...] | None = None

    @classmethod
    def of_head(cls, loss, logits: torch.Tensor, fused: MMFTModelOutput, extras: bool) -> MMFTClassifierOutput:
        """A head's output over the `fused` core output; `extras`: whether any output flag was on."""
        kept = ("pooled", "image_grid", "hidden_states", "attentions", "cross_attentions", "image_cross_attentions")
        return cls(loss=loss, logits=logits, **({k: fused.get(k) for k in kept} if extras else {}))


__all__ = ["MMFTClassifierOutput", "MMFTModelOutput"]
