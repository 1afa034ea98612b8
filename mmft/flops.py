"""Forward FLOPs of an mmft model per sample, estimated from its config, parameter counts and token counts.

Only matrix products are counted (2 FLOPs per multiply-add), the convention of MFU figures (PaLM appendix B):
- transformer towers: 2 x (non-embedding weight-matrix parameters) x tokens + 4 x layers x tokens^2 x width (attention);
- feature-map towers (CNNs), where parameter counts say nothing about FLOPs: every convolution and matmul of one
  forward, counted by `torch.utils.flop_counter.FlopCounterMode` on a meta-device copy (no real compute);
- bridge, projections and head: the exact formula of `mmft.bridge` for the given token counts.
`tests/test_callbacks.py` checks the estimate against FlopCounterMode on a real forward.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .bridge import BRIDGES


@dataclass
class ForwardFlops:
    """Forward FLOPs of one sample, per part."""

    vision: float
    text: float
    bridge: float  # bridge + projections + head

    @property
    def total(self) -> float:
        return self.vision + self.text + self.bridge

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def _attention_flops(queries: int, keys: int, width: int) -> float:
    """Scores (Nq x Nk x D multiply-adds) and weighted sum (same again), all heads together."""
    return 4.0 * queries * keys * width


def _stream_layer_flops(tokens: int, other_tokens: int | None, width: int, ffn: int) -> float:
    """One bridge `StreamBlock`: self-attention, optional cross-attention to `other_tokens`, feed-forward."""
    flops = 2.0 * tokens * 4 * width * width + _attention_flops(tokens, tokens, width)  # q, kv (2x), out
    if other_tokens is not None:
        flops += 2.0 * tokens * 2 * width * width  # q and out on this stream
        flops += 2.0 * other_tokens * 2 * width * width  # kv on the other stream
        flops += _attention_flops(tokens, other_tokens, width)
    return flops + 2.0 * tokens * 2 * width * ffn


def bridge_flops(config, image_tokens: int, text_tokens: int, vision_width: int, text_width: int) -> float:
    """Projections + bridge + classifier head, per sample, from `MMFTConfig` fields."""
    width, ffn, layers = config.hidden_size, config.intermediate_size, config.num_bridge_layers
    flops = 2.0 * width * (vision_width * image_tokens + text_width * text_tokens)  # both projections
    if config.bridge == "co_attention":
        flops += layers * (_stream_layer_flops(text_tokens, image_tokens, width, ffn)
                           + _stream_layer_flops(image_tokens, text_tokens, width, ffn))  # fmt: skip
    elif config.bridge == "cross_attention":
        flops += layers * _stream_layer_flops(text_tokens, image_tokens, width, ffn)
    elif config.bridge == "concat":
        flops += 2.0 * (2 * width) ** 2
    elif config.bridge == "product":
        flops += 2.0 * 2 * width * width + 2.0 * width * 2 * width
    else:
        raise ValueError(f"no FLOPs formula for bridge {config.bridge!r}; known: {', '.join(sorted(BRIDGES))}")
    pooled, answers = 2 * width, config.num_labels
    return flops + 2.0 * (pooled * pooled + pooled * answers)  # head: Linear(P, P), Linear(P, K)


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
    return 2.0 * parameters * tokens + layers * _attention_flops(tokens, tokens, width)


@functools.lru_cache(maxsize=32)
def _counted_vision_flops(config_json: str, pixel_shape: tuple[int, ...]) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import MODEL_MAPPING, AutoConfig

    from .towers import VisionTower

    import json

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
    from .lora import _base

    base = _base(model)
    config = base.config
    if _is_feature_map_tower(base.vision_tower):
        if pixel_shape is None:
            raise ValueError("a feature-map (CNN) vision tower needs pixel_shape=(C, H, W) to count its FLOPs")
        vision = counted_vision_flops(config, pixel_shape)
    else:
        vision = transformer_tower_flops(base.vision_tower, image_tokens)
    text = transformer_tower_flops(base.text_tower, text_tokens)
    bridge = bridge_flops(config, image_tokens, text_tokens, base.vision_tower.hidden_size, base.text_tower.hidden_size)
    return ForwardFlops(vision=vision, text=text, bridge=bridge)


def training_flops(model: nn.Module, forward: ForwardFlops, text_cached: bool = False) -> float:
    """FLOPs of one training sample: 3x forward for parts with trainable weights (forward + backward for
    activations and weights), 1x for a frozen tower (towers come first, so nothing flows back through a frozen
    one), 0 for a frozen text tower served from `enable_frozen_text_cache`. LoRA towers count 3x (an upper bound)."""
    from .lora import _base

    base = _base(model)

    def trains(module: nn.Module) -> bool:
        return any(p.requires_grad for p in module.parameters())

    vision = forward.vision * (3 if trains(base.vision_tower) else 1)
    text_trains = trains(base.text_tower)
    text = forward.text * (3 if text_trains else (0 if text_cached else 1))
    return vision + text + 3 * forward.bridge


__all__ = ["ForwardFlops", "bridge_flops", "forward_flops", "training_flops", "transformer_tower_flops"]
