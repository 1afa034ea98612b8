"""Forward FLOPs of an mmft model per sample, estimated from its config, parameter counts and token counts.

Only matrix products are counted (2 FLOPs per multiply-add), the convention of MFU figures (PaLM appendix B):
- transformer towers: 2 x (non-embedding weight-matrix parameters) x tokens + 4 x layers x tokens^2 x width (attention);
- feature-map towers (CNNs), where parameter counts say nothing about FLOPs: every convolution and matmul of one
  forward, counted by `torch.utils.flop_counter.FlopCounterMode` on a meta-device copy (no real compute);
- projections, bridge and head: asked of the parts themselves (`MMFTModel.fusion_flops`, `Bridge.flops`,
  `head_flops` of the task model), so a new bridge or head brings its own count;
- a caption decoder: asked of the captioning model (`decoder_forward_flops`, at its last batch's caption length).
`tests/test_callbacks.py` checks the estimate against FlopCounterMode on a real forward.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .bridge import attention_flops
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


def _is_feature_map_tower(tower: nn.Module) -> bool:
    """A convolution other than a patchify stem (kernel == stride) means parameter counts do not give FLOPs."""
    return any(
        isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != tuple(module.stride)
        for module in tower.modules()
    )


def _depth_and_width(tower: nn.Module) -> tuple[int, int]:
    """(transformer layers, width) of an HF or timm token tower."""
    config = tower.model.config
    if getattr(config, "num_hidden_layers", None) and getattr(config, "hidden_size", None):
        return config.num_hidden_layers, config.hidden_size
    timm_model = getattr(tower.model, "timm_model", None)
    blocks = getattr(timm_model, "blocks", None)
    if blocks is not None:
        return len(blocks), timm_model.embed_dim
    raise ValueError(f"cannot tell depth/width of tower {type(tower.model).__name__}; it is neither HF nor a timm ViT")


def transformer_tower_flops(tower: nn.Module, tokens: int) -> float:
    """2 x (non-embedding weight matrices) x tokens + attention; parameters counted on the real module."""
    embeddings = {id(p) for m in tower.modules() if isinstance(m, nn.Embedding) for p in m.parameters(False)}
    # Weight matrices and conv kernels only: biases, norms and position/class tokens cost no matmul FLOPs.
    parameters = sum(
        p.numel()
        for name, p in tower.named_parameters()
        if p.dim() >= 2 and id(p) not in embeddings and name.split(".")[-1] not in ("pos_embed", "cls_token")
    )
    layers, width = _depth_and_width(tower)
    return 2.0 * parameters * tokens + layers * attention_flops(tokens, tokens, width)


@functools.lru_cache(maxsize=32)
def _counted_vision_flops(config_json: str, pixel_shape: tuple[int, ...]) -> float:
    import json

    from torch.utils.flop_counter import FlopCounterMode
    from transformers import MODEL_MAPPING, AutoConfig

    from .towers import VisionTower

    data = json.loads(config_json)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):
        # The model class itself, not AutoModel.from_config: under DeepSpeed ZeRO-3, from_config builds inside
        # zero.Init, which partitions the new parameters into real (empty) CPU tensors that a meta input cannot reach.
        tower = VisionTower(MODEL_MAPPING[type(config)](config))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            tower(torch.empty(1, *pixel_shape))
    return float(counter.get_total_flops())


def counted_vision_flops(config, pixel_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward of the vision tower at (C, H, W), counted on a meta-device copy built from its config."""
    return _counted_vision_flops(config.vision_config.to_json_string(use_diff=False), tuple(pixel_shape))


def forward_flops(
    model: nn.Module, image_tokens: int, text_tokens: int, pixel_shape: tuple[int, ...] | None = None
) -> ForwardFlops:
    """Forward FLOPs of one sample through `model` (an mmft task model, possibly inside a peft wrapper)."""
    task = task_model(model)
    core = task.core
    config = core.config
    if _is_feature_map_tower(core.vision_tower):
        if pixel_shape is None:
            raise ValueError("a feature-map (CNN) vision tower needs pixel_shape=(C, H, W) to count its FLOPs")
        vision = counted_vision_flops(config, pixel_shape)
    else:
        vision = transformer_tower_flops(core.vision_tower, image_tokens)
    text = transformer_tower_flops(core.text_tower, text_tokens)
    bridge = core.fusion_flops(image_tokens, text_tokens) + task.head_flops(image_tokens, text_tokens)
    decoder_flops = getattr(task, "decoder_forward_flops", None)  # only models with a decoder have one
    decoder = decoder_flops(image_tokens) if decoder_flops else 0.0
    return ForwardFlops(vision=vision, text=text, bridge=bridge, decoder=decoder)


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


__all__ = ["ForwardFlops", "forward_flops", "training_flops", "transformer_tower_flops"]
