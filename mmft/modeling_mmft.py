"""`MMFTModel` (towers + projections + bridge) and `MMFTPreTrainedModel`, the base of every task model.

Task models (one per task package: `tasks/vqa/modeling.py`, `tasks/classification/modeling.py`, ...) put a head on
`MMFTModel`. What a shared mechanism needs to know about a model, the model says: its towers (`towers()`), the
modules every fine-tuning plan trains (`trained_module_names()`), the FLOPs of its parts for a batch's shapes
(`part_flops()`, `head_flops()`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedConfig, PreTrainedModel, TimmWrapperModel
from transformers import initialization as init
from transformers.utils import can_return_tuple

from .bridge import build_bridge
from .configuration_mmft import MMFTConfig
from .features import TowerFeaturesMixin
from .file_modes import give_ordinary_modes
from .modeling_outputs import MMFTClassifierOutput, MMFTModelOutput
from .positions import sincos_2d
from .safe_loading import refuse_pickled_weights
from .text_cache import MIB, FrozenTextCache
from .towers import TOWER_SPECS, BatchShapes, TextTower, TowerOutput, VisionTower


def fsdp_wrap_classes(model: nn.Module) -> list[str]:
    """Class names FSDP should shard as units: each tower's repeated layer and the bridge.

    The bridge is one unit because it calls its blocks' methods directly (not through `__call__`), which FSDP's
    unshard hooks would never see; a timm tower contributes its block class when it has `.blocks` (ViT-like),
    otherwise it stays in the root unit.
    """
    names = {type(model.bridge).__name__}
    for tower in (model.vision_tower, model.text_tower):
        inner = tower.model
        if isinstance(inner, TimmWrapperModel):
            blocks = getattr(inner.timm_model, "blocks", None)
            names |= {type(blocks[0]).__name__} if isinstance(blocks, nn.Sequential) and len(blocks) else set()
        else:
            # A model's list may name classes it does not build (CLIP vision lists the text embeddings too);
            # accelerate rejects names it cannot find, so keep only those present.
            present = {type(module).__name__ for module in inner.modules()}
            names |= set(inner._no_split_modules or []) & present
    return sorted(names)


class MMFTPreTrainedModel(PreTrainedModel):
    """Weight init, loading and the `from_vision_text_pretrained` factory shared by every mmft model."""

    config_class = MMFTConfig
    config: MMFTConfig
    base_model_prefix = "mmft"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The VQA loss is a per-example mean that ignores `num_items_in_batch`. Left to its default (forward takes
    # **kwargs), the Trainer would then skip dividing the loss by the gradient-accumulation steps and multiply it by
    # the number of processes, so gradients and logged losses would grow with accumulation and world size.
    accepts_loss_kwargs = False

    has_labels = False  # heads over a label vocabulary (config.id2label) set this

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise one module's own parameters (transformers calls it on every module outside the towers, which
        are PreTrainedModels and initialise themselves: projections, modality embeddings, bridge, heads).

        It runs on a freshly built model and, when loading, on each module a checkpoint does not fully cover, so a
        parameter it skipped would hold uninitialised memory. `transformers.initialization` leaves loaded tensors as
        they are. A module holding other parameters initialises them itself (`reset_parameters`, like torch layers
        and the bridge's `Attention`); one that cannot is refused here, when the model is built.
        """
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=self._init_std(module.in_features))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.trunc_normal_(module.weight, std=self._init_std(module.embedding_dim))
        elif own := [name for name, _ in module.named_parameters(recurse=False)]:
            if not callable(getattr(module, "reset_parameters", None)):
                raise TypeError(
                    f"{type(module).__name__} holds parameter(s) {own} that {type(self).__name__}._init_weights cannot "
                    "initialise; give it a reset_parameters() method that initialises them"
                )
            module.reset_parameters()  # torch's init functions skip loaded tensors while transformers initialises

    def _init_std(self, fan_in: int) -> float:
        # A fixed std scales each layer's output by std * sqrt(fan_in); with projection -> bridge -> head all at
        # 0.02 the from-scratch vision tower got too little gradient to learn shapes in time (docs/ablation.md).
        return self.config.initializer_range or fan_in**-0.5

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func: Callable = checkpoint, every_n_layers: int = 1
    ) -> None:
        # transformers flags every module with a `gradient_checkpointing` attribute (HF tower layers, mmft bridges);
        # timm towers have their own switch, which that walk cannot reach.
        super()._set_gradient_checkpointing(enable, gradient_checkpointing_func, every_n_layers)
        for module in self.modules():
            if isinstance(module, TimmWrapperModel) and module.supports_gradient_checkpointing:
                module.timm_model.set_grad_checkpointing(enable)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args: Any, **kwargs: Any) -> MMFTPreTrainedModel:
        """As in transformers (so also through the Auto classes and `pipeline`), but safetensors only: weights that
        exist only as a pickled `pytorch_model.bin` are refused with an OSError, unless the caller passes
        `use_safetensors` as False (then transformers reads them with `torch.load(weights_only=True)`)."""
        if kwargs.get("use_safetensors") is not False:
            kwargs["use_safetensors"] = True
            refuse_pickled_weights(pretrained_model_name_or_path, "model", kwargs.get("subfolder") or "")
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """As in transformers; the weight files then get the ordinary file mode (safetensors writes them 0600)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        give_ordinary_modes(save_directory, "*.safetensors")  # a folder that was not written yields no file

    # -- what shared code asks the model ----------------------------------------------------------------------------
    @property
    def core(self) -> MMFTModel:
        """The `MMFTModel` inside this model (the model itself for `MMFTModel`)."""
        return self if isinstance(self, MMFTModel) else getattr(self, self.base_model_prefix)

    def towers(self) -> dict[str, nn.Module]:
        """The pretrained towers a `LoraPlan` decides about, by kind: `{"vision": ..., "text": ...}`."""
        return {"vision": self.core.vision_tower, "text": self.core.text_tower}

    def trained_module_names(self) -> list[str]:
        """Qualified names of the modules that train under every plan: everything that is not a tower.

        Each is the largest module holding no tower (`mmft.bridge`, `classifier`, ...), so a head adds its layers
        and they are trained with no list of names anywhere. A parameter set directly on a module that also holds a
        tower cannot be named this way and is refused: put it in a submodule.
        """
        tower_ids = {id(tower) for tower in self.towers().values()}
        holds_tower = {id(m) for m in self.modules() if any(id(t) in tower_ids for t in m.modules())}
        names: list[str] = []

        def visit(module: nn.Module, prefix: str) -> None:
            loose = [n for n, _ in module.named_parameters(recurse=False)]
            if loose:
                raise TypeError(
                    f"{type(self).__name__}: parameter(s) {[prefix + n for n in loose]} sit on a module that also "
                    "holds a tower; wrap them in a submodule (e.g. a head module) so fine-tuning plans can train them"
                )
            for child_name, child in module.named_children():
                if id(child) in tower_ids:
                    continue
                if id(child) in holds_tower:
                    visit(child, f"{prefix}{child_name}.")
                elif any(True for _ in child.parameters()):
                    names.append(prefix + child_name)

        visit(self, "")
        return names

    def part_flops(self, shapes: BatchShapes) -> dict[str, float]:
        """Forward FLOPs per sample of each part for a batch of `shapes`: each tower reports its own; `bridge` covers
        the projections, the bridge and the task head. A model with more parts (a decoder) adds them."""
        core = self.core
        fusion = core.fusion_flops(shapes.image_tokens, shapes.text_tokens)
        return {
            "vision": core.vision_tower.forward_flops(shapes),
            "text": core.text_tower.forward_flops(shapes),
            "bridge": fusion + self.head_flops(shapes.image_tokens, shapes.text_tokens),
        }

    def head_flops(self, image_tokens: int, text_tokens: int) -> float:
        """Forward FLOPs of the task head per sample. Default: every Linear outside `MMFTModel`, applied once."""
        core = self.core
        inside = {id(m) for m in core.modules()}
        return sum(
            2.0 * m.in_features * m.out_features
            for m in self.modules()
            if isinstance(m, nn.Linear) and id(m) not in inside
        )

    def get_input_embeddings(self) -> nn.Module:
        """The text tower's token embeddings (so `resize_token_embeddings` works after adding tokens)."""
        return self.core.text_tower.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.core.text_tower.model.set_input_embeddings(value)

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Resize the text tower's token embeddings, e.g. after adding tokens to the tokenizer.

        The tower does it, so new rows get the tower's own init and `config.text_config.vocab_size` (the tower's
        config) follows; the rest of the model is left as it is and nothing is tied.
        """
        return self.core.text_tower.model.resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)

    def output_flags(self, output_attentions: bool | None, output_hidden_states: bool | None) -> tuple[bool, bool]:
        """A forward's output flags, each defaulting to its config field as in every transformers model."""
        attentions = self.config.output_attentions if output_attentions is None else output_attentions
        hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return bool(attentions), bool(hidden_states)

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision: str | PreTrainedConfig,
        text: str | PreTrainedConfig,
        bridge: str = "co_attention",
        labels: Sequence[str] | None = None,
        vision_model_args: dict[str, Any] | None = None,
        text_model_args: dict[str, Any] | None = None,
        **config_overrides: Any,
    ) -> MMFTPreTrainedModel:
        """
        Join a pretrained vision tower and a pretrained text tower with a freshly initialised bridge (and head).

        Args:
            vision: a Hub id or local folder (HF vision model or `timm/...`), an offline alias (`efficientnet_lite0`),
                `timm:<architecture>` for a timm model with random weights (trained from scratch), or a config for a
                random tower.
            text: a Hub id, a local folder, an offline alias (`minilm`), or a config for a random tower.
            bridge: fusion name from `mmft.BRIDGES`.
            labels: the label vocabulary of a classification-style head (becomes `id2label`): the answers of a VQA
                model, the classes of a classifier.
            vision_model_args: extra `timm.create_model` kwargs for timm towers, e.g. `{"img_size": 64}`.
            text_model_args: overrides of the text tower's config fields, e.g. `{"hidden_dropout_prob": 0.0}`.
            **config_overrides: any other `MMFTConfig` field (`num_bridge_layers`, `hidden_size`, ...).
        """
        if "answers" in config_overrides:  # removed; as a config field it would be kept silently and labels left unset
            raise TypeError(
                "from_vision_text_pretrained() no longer takes answers=; pass the answer vocabulary as labels="
            )
        towers, sources = {}, {}
        for kind, name, overrides in (("vision", vision, vision_model_args), ("text", text, text_model_args)):
            towers[kind], sources[kind] = TOWER_SPECS[kind].from_name(name, overrides)
        if labels is not None:
            labels = list(labels)
            if len(set(labels)) != len(labels):
                raise ValueError("labels must be unique; got duplicates in the label (answer) vocabulary")
            config_overrides["id2label"] = dict(enumerate(labels))
            config_overrides["label2id"] = {label: i for i, label in enumerate(labels)}
        config = cls.config_class(
            vision_config=towers["vision"].model.config,
            text_config=towers["text"].model.config,
            bridge=bridge,
            vision_pretrained_from=sources["vision"],
            text_pretrained_from=sources["text"],
            **config_overrides,
        )
        return cls(config, vision_tower=towers["vision"], text_tower=towers["text"])


class MMFTModel(TowerFeaturesMixin, MMFTPreTrainedModel):
    """Vision tower + text tower, each projected to the bridge width, fused by the configured bridge.

    `get_image_features` / `get_text_features` (each tower alone, no bridge) come from `mmft.features`.
    """

    def __init__(
        self, config: MMFTConfig, vision_tower: VisionTower | None = None, text_tower: TextTower | None = None
    ) -> None:
        super().__init__(config)
        if config.vision_config is None or config.text_config is None:
            raise ValueError(
                "MMFTConfig needs both vision_config and text_config; build a model with "
                "MMFTForVisualQuestionAnswering.from_vision_text_pretrained(vision=..., text=...)"
            )
        self.vision_tower = vision_tower or TOWER_SPECS["vision"].build(config.vision_config)
        self.text_tower = text_tower or TOWER_SPECS["text"].build(config.text_config)
        width = config.hidden_size
        self.vision_projection = nn.Linear(self.vision_tower.hidden_size, width)
        self.text_projection = nn.Linear(self.text_tower.hidden_size, width)
        self.modality_embeddings = nn.Embedding(2, width)  # 0: text, 1: image
        self.bridge = build_bridge(config)
        self._text_cache: FrozenTextCache | None = None
        # FSDP's default auto-wrap units (accelerate reads `_no_split_modules`): tower layers and the whole bridge.
        self._no_split_modules = fsdp_wrap_classes(self)
        # Each tower keeps the attention backend its sub-config asks for (`from_pretrained(..., attn_implementation=
        # {"text_config": "eager", ...})` sets it there); a tower that asks for none gets transformers' default.
        self.set_attn_implementation(
            {f"{kind}_config": getattr(config, f"{kind}_config")._attn_implementation for kind in ("vision", "text")}
        )
        self.post_init()

    # -- frozen towers ---------------------------------------------------------------------------------------------
    def _frozen(self, tower: nn.Module) -> bool:
        return not any(parameter.requires_grad for parameter in tower.parameters())

    def train(self, mode: bool = True) -> MMFTModel:
        """A frozen tower is a fixed feature extractor: it stays in eval mode (no dropout) while the rest trains."""
        super().train(mode)
        for tower in (self.vision_tower, self.text_tower):
            if mode and self._frozen(tower):
                tower.eval()
        return self

    def enable_frozen_text_cache(self, max_mb: float = 1024) -> None:
        """
        Memoise the frozen text tower's output per distinct (input_ids, attention_mask) row, in at most `max_mb` MiB.

        Worth it when questions repeat (easy-VQA has 107 distinct strings); exact, because a frozen tower runs in
        eval mode. Ignored whenever the text tower has trainable parameters (LoRA or full fine-tuning). Entries stay
        on the tower's device; each costs tokens x hidden size x dtype size bytes (see `mmft.text_cache`), and the
        least recently used is evicted when the next would pass the bound.
        """
        self._text_cache = FrozenTextCache(int(max_mb * MIB))

    def _encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self._text_cache is None or not self._frozen(self.text_tower):
            return self.text_tower(input_ids, attention_mask).tokens  # (B, Nt, Dt)
        rows = torch.cat([input_ids, attention_mask], dim=1).cpu().numpy()
        keys = [row.tobytes() for row in rows]
        found = {key: self._text_cache.get(key) for key in dict.fromkeys(keys)}  # each distinct row once
        missing = [keys.index(key) for key, state in found.items() if state is None]
        if missing:
            with torch.no_grad():
                computed = self.text_tower(input_ids[missing], attention_mask[missing]).tokens
            for i, state in zip(missing, computed):
                found[keys[i]] = state.clone()  # its own storage: the bytes counted are the bytes kept
                self._text_cache.put(keys[i], found[keys[i]])
        return torch.stack([found[key] for key in keys])  # (B, Nt, Dt)

    # -- per-tower features (no bridge) ------------------------------------------------------------------------------
    def project_image(self, vision: TowerOutput) -> torch.Tensor:
        """A vision tower's tokens projected to the bridge width, with modality and 2-D positions: (B, Nv, D)."""
        states = self.vision_projection(vision.tokens) + self.modality_embeddings.weight[1]  # (B, Nv, D)
        if vision.grid is not None and self.config.image_position_embeddings:
            states = states + sincos_2d(*vision.grid, states.shape[-1], states.device, states.dtype)
        return states

    def project_text(self, text_tokens: torch.Tensor) -> torch.Tensor:
        """A text tower's tokens (B, Nt, Dt) projected to the bridge width, with the modality embedding: (B, Nt, D)."""
        return self.text_projection(text_tokens) + self.modality_embeddings.weight[0]

    def image_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """Image tokens projected to the bridge width, with modality and 2-D positions: ((B, Nv, D), grid)."""
        vision = self.vision_tower(pixel_values)  # tokens (B, Nv, Dv)
        return self.project_image(vision), vision.grid

    def text_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text tokens projected to the bridge width, with the modality embedding: (B, Nt, D)."""
        return self.project_text(self._encode_text(input_ids, attention_mask))

    def fusion_flops(self, image_tokens: int, text_tokens: int) -> float:
        """Forward FLOPs per sample of both projections and the bridge."""
        width = self.config.hidden_size
        projections = (
            2.0 * width * (self.vision_tower.hidden_size * image_tokens + self.text_tower.hidden_size * text_tokens)
        )
        return projections + self.bridge.flops(text_tokens, image_tokens)

    # -- forward ---------------------------------------------------------------------------------------------------
    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> MMFTModelOutput:
        """
        Fuse images `(B, 3, H, W)` and token ids `(B, Nt)`. `output_attentions` / `output_hidden_states` default to
        the config fields; `return_dict=False` (or `config.return_dict=False`) returns `MMFTModelOutput.to_tuple()`.
        """
        output_attentions, output_hidden_states = self.output_flags(output_attentions, output_hidden_states)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        image_states, grid = self.image_states(pixel_values)  # (B, Nv, D)
        text_states = self.text_states(input_ids, attention_mask)  # (B, Nt, D)
        fused = self.bridge(text_states, image_states, attention_mask, output_attentions, output_hidden_states)
        return MMFTModelOutput(**fused, image_grid=grid)


__all__ = ["MMFTClassifierOutput", "MMFTModel", "MMFTModelOutput", "MMFTPreTrainedModel"]
