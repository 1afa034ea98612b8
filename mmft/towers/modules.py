"""The tower modules: vision and text towers behind one interface (pixels or token ids in, token states out), and the
caption decoder. How each kind is named, configured, built, loaded and described is its spec's (`mmft.towers.specs`).

Towers come from their own ecosystems and are never re-implemented here: text from `transformers.AutoModel`,
vision from `AutoModel` (ViT, CLIP/SigLIP vision, DINOv2, ...) or from timm through transformers' `TimmWrapperModel`
(ViTs give tokens; feature-map models such as ResNet/ConvNeXt give an (H, W) grid that becomes H*W tokens).

Each tower reports its own forward FLOPs from a batch's shapes (`forward_flops`), counting matrix products only
(2 FLOPs per multiply-add), as `mmft.flops` describes.
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, TimmWrapperConfig
from transformers.utils import ModelOutput

from ..bridge import attention_flops

TIMM_SCRATCH_PREFIX = "timm:"  # "timm:<architecture>": a timm architecture with random weights (no download)


@dataclass(frozen=True)
class BatchShapes:
    """What the FLOPs of a model's parts depend on, read off one batch's shapes (per sample, padding included)."""

    image_tokens: int  # tokens the vision tower gives (Nv)
    text_tokens: int  # tokens the text tower reads (Nt)
    pixel_shape: tuple[int, ...] | None = None  # (C, H, W): what a feature-map (CNN) tower's FLOPs depend on
    caption_tokens: int = 0  # caption positions the decoder reads and predicts (T); 0 for a model without a decoder


@dataclass
class TowerOutput(ModelOutput):
    """A tower's token states. A `ModelOutput`, so `torch.export` and `torch.compile` can trace a tower on its own.

    `hidden_states` / `attentions` only when asked for (`get_image_features` / `get_text_features` return them): an HF
    tower's own, one per layer (+ the embeddings for hidden states); a timm tower's are described at `VisionTower`.
    """

    tokens: torch.Tensor | None = None  # (B, N, D)
    grid: tuple[int, int] | None = None  # (H, W) when tokens come from a feature map, row-major
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def _drop_unused_pooler(model: nn.Module) -> None:
    # BERT/ViT poolers are never used (the bridge pools); an unused parameter would also break DDP.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None


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
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import MODEL_MAPPING, AutoConfig

    data = json.loads(config_json)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):
        # The model class itself, not AutoModel.from_config: under DeepSpeed ZeRO-3, from_config builds inside
        # zero.Init, which partitions the new parameters into real (empty) CPU tensors that a meta input cannot reach.
        tower = VisionTower(MODEL_MAPPING[type(config)](config))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            tower(torch.empty(1, *pixel_shape))
    return float(counter.get_total_flops())


def counted_vision_flops(config: Any, pixel_shape: tuple[int, ...]) -> float:
    """FLOPs of one forward of a vision tower of `config` (the tower's own) at (C, H, W), counted on a meta-device
    copy built from the config (no real compute)."""
    return _counted_vision_flops(config.to_json_string(use_diff=False), tuple(pixel_shape))


class VisionTower(nn.Module):
    """Any vision backbone -> `TowerOutput` of image tokens.

    Asked for hidden states, an HF tower gives its own (embeddings + one per layer). A timm tower gives timm's
    intermediate outputs as transformers' `TimmWrapperModel` does, each a `(B, C, h, w)` map: one per block for
    ViTs and per stage for CNNs (`forward_intermediates`), or, for a `features_only` tower, the stage maps it
    computes anyway (`out_indices`). A timm tower never gives attentions (None): timm exposes no attention weights.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        _drop_unused_pooler(model)
        self.is_timm = isinstance(model.config, TimmWrapperConfig)
        self.features_only = self.is_timm and bool((model.config.model_args or {}).get("features_only", False))
        if self.is_timm:
            info = getattr(model.timm_model, "feature_info", None)
            self.hidden_size = info.channels()[-1] if self.features_only else model.timm_model.num_features
        else:
            self.hidden_size = model.config.hidden_size
        # HF ViT-likes read other image sizes only when asked to interpolate their position embeddings.
        self.interpolate = (
            not self.is_timm and "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        )

    def unused_module_names(self) -> list[str]:
        """Submodules (names inside this tower) whose output never reaches the loss: pooling heads. The bridge reads
        the token states, so SigLIP's attention-pooling `head` (run, its result dropped) and a timm model's
        `attn_pool` / `head` (not run: `do_pooling=False`) get no gradient; LoRA adapters there would never train."""
        if self.is_timm:
            return [
                f"model.timm_model.{name}"
                for name in ("attn_pool", "head")
                if isinstance(getattr(self.model.timm_model, name, None), nn.Module)
            ]
        return ["model.head"] if getattr(self.model, "use_head", False) and hasattr(self.model, "head") else []

    def forward_flops(self, shapes: BatchShapes) -> float:
        """Forward FLOPs per sample. A feature-map (CNN) tower's parameter counts say nothing about its FLOPs, so
        every convolution and matmul of one forward at `shapes.pixel_shape` is counted on a meta-device copy."""
        if _is_feature_map_tower(self):
            if shapes.pixel_shape is None:
                raise ValueError("a feature-map (CNN) vision tower needs pixel_shape=(C, H, W) to count its FLOPs")
            return counted_vision_flops(self.model.config, shapes.pixel_shape)
        return transformer_tower_flops(self, shapes.image_tokens)

    def forward(
        self, pixel_values: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> TowerOutput:
        if self.features_only:
            # CPU convolutions (oneDNN) run ~15-20% faster on channels-last input; the result is the same.
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        if self.is_timm:
            # Attentions are never requested: TimmWrapperModel raises on them, and a config-wide
            # `output_attentions=True` (the bridge's maps) must not make a timm model's features fail. A
            # features_only tower's stage maps are its hidden states already (the wrapper would refuse the flag).
            asked = {"output_hidden_states": True} if output_hidden_states and not self.features_only else {}
            outputs = self.model(pixel_values, do_pooling=False, **asked)
            states, hidden_states, attentions = outputs.last_hidden_state, outputs.hidden_states, None
            if isinstance(states, (list, tuple)):  # features_only: one map per requested stage; use the last
                hidden_states = tuple(states) if output_hidden_states else None
                states = states[-1]
            hidden_states = tuple(hidden_states) if hidden_states is not None else None  # timm gives a list
        else:
            extra = {"interpolate_pos_encoding": True} if self.interpolate else {}
            flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
            outputs = self.model(pixel_values=pixel_values, **flags, **extra)
            states, hidden_states, attentions = outputs.last_hidden_state, outputs.hidden_states, outputs.attentions
        if states.dim() == 4:  # (B, C, H, W) feature map -> (B, H*W, C) tokens
            height, width = states.shape[-2:]
            return TowerOutput(states.flatten(2).transpose(1, 2), (height, width), hidden_states, attentions)
        return TowerOutput(states, None, hidden_states, attentions)  # (B, N, D)


class TextTower(nn.Module):
    """Any HF text encoder -> `TowerOutput` of token states."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        _drop_unused_pooler(model)
        self.hidden_size = model.config.hidden_size

    def forward_flops(self, shapes: BatchShapes) -> float:
        """Forward FLOPs per sample over the batch's text tokens."""
        return transformer_tower_flops(self, shapes.text_tokens)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> TowerOutput:
        flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, **flags)
        return TowerOutput(outputs.last_hidden_state, None, outputs.hidden_states, outputs.attentions)


# -- the caption decoder: a causal language model --------------------------------------------------------------------
class DecoderTower(nn.Module):
    """Any HF causal language model (`AutoModelForCausalLM`): embeddings in, next-token logits out.

    Its token embeddings and `lm_head` belong to this tower, so a `LoraPlan` decides about them with the rest of it.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.hidden_size = model.get_input_embeddings().embedding_dim
        # Decoders differ in whether their forward can skip the logits of leading positions (the image prefix).
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    @property
    def all_tied_weights_keys(self) -> dict[str, str]:
        """The decoder's tied weights (e.g. `lm_head` = embeddings), under this wrapper's names: the composite
        model's `post_init` collects them from its direct children only, so without this a tied `lm_head` would
        not be re-tied on loading."""
        return {f"model.{k}": f"model.{v}" for k, v in (self.model.all_tied_weights_keys or {}).items()}

    def forward_flops(self, positions: int, logit_positions: int) -> float:
        """Forward FLOPs of one sample: `positions` tokens in (prefix included), logits for `logit_positions`."""
        output = self.model.get_output_embeddings()
        linears = [m for m in self.modules() if isinstance(m, nn.Linear) and m is not output]
        body = sum(m.in_features * m.out_features for m in linears)
        # Attention counted over every (query, key) pair, causal or not, as SDPA's math and MFU conventions count it.
        attention = self.model.config.num_hidden_layers * attention_flops(positions, positions, self.hidden_size)
        return 2.0 * body * positions + attention + 2.0 * output.in_features * output.out_features * logit_positions

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)  # (B, T, Dd)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, keep: int, **kwargs: Any):
        """Run the decoder on `inputs_embeds` (B, N, Dd); logits only for the last `keep` positions (B, keep, V)."""
        if self._keeps_logits:
            return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, logits_to_keep=keep, **kwargs)
        outputs = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        outputs.logits = outputs.logits[:, -keep:]
        return outputs
