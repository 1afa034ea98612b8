"""Forward FLOPs of an mmft model per sample, estimated from its config, parameter counts and token counts.

Only matrix products are counted (2 FLOPs per multiply-add), the convention of MFU figures (PaLM appendix B):
- transformer towers: 2 x (non-embedding weight-matrix parameters) x tokens + 4 x layers x tokens^2 x width (attention);
- feature-map towers (CNNs), where parameter counts say nothing about FLOPs: every convolution and matmul of one
  forward, counted by `torch.utils.flop_counter.FlopCounterMode` on a meta-device copy (no real compute);
- projections, bridge and head: asked of the parts themselves (`MMFTModel.fusion_flops`, `Bridge.flops`,
  `head_flops` of the task model), so a new bridge or head brings its own count;
- a caption decoder: the decoder's own count (`DecoderTower.forward_flops`) at the batch's caption length.
Every part reports from the batch's shapes (`BatchShapes`), through the task model's `part_flops`; nothing is read
off a previous forward.
`tests/test_callbacks.py` checks the estimate against FlopCounterMode on a real forward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .towers import BatchShapes, transformer_tower_flops
from .unwrap import task_model


@dataclass
class ForwardFlops:
    """Forward FLOPs of one sample, per part."""

    vision: float
    text: float
    bridge: float  # bridge + projections + head
    decoder: float = 0.0  # a captioning model's decoder

    @property
    def total(self) -> float:
        return self.vision + self.text + self.bridge + self.decoder

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def forward_flops(
    model: nn.Module,
    image_tokens: int,
    text_tokens: int,
    pixel_shape: tuple[int, ...] | None = None,
    caption_tokens: int = 0,
) -> ForwardFlops:
    """Forward FLOPs of one sample through `model` (an mmft task model, possibly inside a peft wrapper), for a batch
    of these shapes: `caption_tokens` is a captioning batch's caption length (its `input_ids` / `labels` width)."""
    shapes = BatchShapes(image_tokens, text_tokens, tuple(pixel_shape) if pixel_shape else None, caption_tokens)
    return ForwardFlops(**task_model(model).part_flops(shapes))


def training_flops(model: nn.Module, forward: ForwardFlops, text_cached: bool = False) -> float:
    """FLOPs of one training sample: 3x forward for parts with trainable weights (forward + backward for
    activations and weights), 1x for a frozen tower (towers come first, so nothing flows back through a frozen
    one), 0 for a frozen text tower served from `enable_frozen_text_cache`. LoRA towers count 3x (an upper bound).
    A caption decoder comes last, so the gradient of the prefix always flows back through it: it counts 2x plus
    the share of its weights that train (weight gradients), i.e. 2x frozen, ~2x with LoRA, 3x in full."""
    task = task_model(model)
    core = task.core

    def trains(module: nn.Module) -> bool:
        return any(p.requires_grad for p in module.parameters())

    vision = forward.vision * (3 if trains(core.vision_tower) else 1)
    text_trains = trains(core.text_tower)
    text = forward.text * (3 if text_trains else (0 if text_cached else 1))
    decoder = forward.decoder * (2 + _trained_share(task.towers().get("decoder")))
    return vision + text + 3 * forward.bridge + decoder


def _trained_share(module: nn.Module | None) -> float:
    """The share of a module's parameters that train (0 for no module)."""
    if module is None:
        return 0.0
    sizes = [(p.numel(), p.requires_grad) for p in module.parameters()]
    return sum(n for n, trains in sizes if trains) / max(sum(n for n, _ in sizes), 1)


__all__ = ["BatchShapes", "ForwardFlops", "forward_flops", "training_flops", "transformer_tower_flops"]
