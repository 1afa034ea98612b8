"""The fusion study's contestants: the four mmft bridges and two peer architectures, built from one recipe setup.

Every builder takes the recipe's model and LoRA arguments (`mmft.parse_recipe_args(...).model` / `.lora`, so all
variants share the towers, widths and tuning plan of the preset) and returns a model whose forward takes
`pixel_values`, `input_ids`, `attention_mask` and returns `logits` over the answer vocabulary; the benchmark applies
one loss to all of them. Everything mmft is reached through its public API (`mmft.*`).

- `co_attention`, `cross_attention`, `concat`, `product`: `MMFTForVisualQuestionAnswering` with that bridge.
- `vilt`: transformers' `ViltForQuestionAnswering` (single-stream early fusion), from scratch, at the bridge width.
- `dual_encoder`: transformers' `VisionTextDualEncoderModel` over the same two towers (late fusion) with an MLP head
  on [image embedding ; text embedding].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from harness import base_model, recipe_model
from torch import nn
from transformers import (
    AutoModel,
    TimmWrapperModel,
    ViltConfig,
    ViltForQuestionAnswering,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.timm_wrapper.modeling_timm_wrapper import TimmWrapperModelOutput

from mmft import BRIDGES, TaskData, get_task, resolve_name, vision_config_from_name
from mmft.training import make_plan

PEER_TOWER_MODES = ("full", "frozen")  # the peers have no LoraPlan; LoRA towers are mmft-only here
TOWER_MODULES = ("vision_tower.", "text_tower.", "vision_model.", "text_model.")  # mmft and dual-encoder names


def build_mmft(bridge: str) -> Callable[..., nn.Module]:
    def build(model_args: Any, lora_args: Any, data: TaskData, options: dict) -> nn.Module:
        model, _ = recipe_model(get_task("vqa")(), model_args, data, bridge=bridge, **options.get("mmft_config", {}))
        model = make_plan(lora_args).apply(model)  # the recipe's own plan from its LoRA flags
        if model_args.cache_frozen_text:
            base_model(model).core.enable_frozen_text_cache()
        return model

    return build


# -- peer A: ViLT ---------------------------------------------------------------------------------------------------
def build_vilt(model_args: Any, lora_args: Any, data: TaskData, options: dict) -> nn.Module:
    """ViLT from scratch: question tokens and 8x8-pixel patches in one transformer (single-stream early fusion)."""
    image_size = model_args.image_size or 64
    answers = data.labels
    config = ViltConfig(
        vocab_size=options["vocab_size"],  # the text tower's tokenizer (MiniLM's BERT WordPiece)
        hidden_size=model_args.hidden_size,
        num_hidden_layers=options["vilt_layers"],
        num_attention_heads=model_args.num_attention_heads,
        intermediate_size=4 * model_args.hidden_size,
        hidden_dropout_prob=model_args.hidden_dropout,
        image_size=image_size,
        patch_size=options["vilt_patch_size"],
        max_position_embeddings=model_args.max_text_length,
        num_labels=len(answers),
        id2label=dict(enumerate(answers)),
        label2id={answer: i for i, answer in enumerate(answers)},
    )
    return ViltForQuestionAnswering(config)


# -- peer B: dual encoder -------------------------------------------------------------------------------------------
class MeanPooledTimmModel(TimmWrapperModel):
    """A `features_only` timm tower whose last feature map is mean-pooled into `pooler_output`.

    `VisionTextDualEncoderModel` reads `pooler_output`, which `TimmWrapperModel` leaves `None` for `features_only`
    towers (the mmft default tower is the stride-8 map of resnet10t, not the whole classifier trunk).
    """

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> TimmWrapperModelOutput:
        maps = super().forward(pixel_values, do_pooling=False).last_hidden_state
        last = maps[-1] if isinstance(maps, (list, tuple)) else maps  # (B, C, H, W)
        return TimmWrapperModelOutput(last_hidden_state=last, pooler_output=last.mean(dim=(2, 3)))  # (B, C)


class DualEncoderForVQA(nn.Module):
    """`VisionTextDualEncoderModel` + an MLP over [image embedding ; text embedding] (no token-level interaction)."""

    def __init__(self, encoder: VisionTextDualEncoderModel, num_answers: int, cache_frozen_text: bool) -> None:
        super().__init__()
        self.encoder = encoder
        width = 2 * encoder.projection_dim
        # The same head shape as mmft's VQA classifier, so only the fusion differs.
        self.classifier = nn.Sequential(
            nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, num_answers)
        )
        self._text_cache: dict[bytes, torch.Tensor] | None = {} if cache_frozen_text else None

    def _text_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.encoder.text_model.parameters())

    def train(self, mode: bool = True) -> DualEncoderForVQA:
        super().train(mode)
        if mode and self._text_frozen():  # a frozen tower is a fixed feature extractor, as in mmft
            self.encoder.text_model.eval()
        return self

    def _text_pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self._text_cache is None or not self._text_frozen():
            return self.encoder.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        keys = [row.tobytes() for row in torch.cat([input_ids, attention_mask], dim=1).cpu().numpy()]
        missing = [i for i, key in enumerate(keys) if key not in self._text_cache]
        if missing:
            with torch.no_grad():
                pooled = self.encoder.text_model(input_ids=input_ids[missing], attention_mask=attention_mask[missing])
            self._text_cache.update((keys[i], row) for i, row in zip(missing, pooled.pooler_output))
        return torch.stack([self._text_cache[key] for key in keys])  # (B, Dt)

    def forward(self, pixel_values, input_ids, attention_mask=None, labels=None, **kwargs) -> SequenceClassifierOutput:
        # `labels` is named so the Trainer treats it as the label column; the benchmark computes the loss.
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        image = self.encoder.get_image_features(pixel_values=pixel_values).pooler_output  # (B, P)
        text = self.encoder.text_projection(self._text_pooled(input_ids, attention_mask))  # (B, P)
        return SequenceClassifierOutput(logits=self.classifier(torch.cat([image, text], dim=-1)))  # (B, K)


def build_dual_encoder(model_args: Any, lora_args: Any, data: TaskData, options: dict) -> nn.Module:
    for tower in ("vision", "text"):
        if getattr(lora_args, f"lora_{tower}") not in PEER_TOWER_MODES:
            raise ValueError(f"the dual_encoder peer supports lora_{tower} in {PEER_TOWER_MODES}, not LoRA")
    vision_config = vision_config_from_name(model_args.vision_model, model_args.timm_args())
    vision = MeanPooledTimmModel(vision_config)
    # VisionTextDualEncoderModel sizes its projection from `vision_config.hidden_size`, which timm configs lack.
    vision_config.hidden_size = vision.timm_model.feature_info.channels()[-1]
    text = AutoModel.from_pretrained(resolve_name(model_args.text_model))
    config = VisionTextDualEncoderConfig(
        vision_config=vision_config, text_config=text.config, projection_dim=model_args.hidden_size
    )
    encoder = VisionTextDualEncoderModel(config, vision_model=vision, text_model=text)
    encoder.text_model.requires_grad_(lora_args.lora_text == "full")
    encoder.vision_model.requires_grad_(lora_args.lora_vision == "full")
    encoder.logit_scale.requires_grad_(False)  # the contrastive temperature is unused by the VQA head
    return DualEncoderForVQA(encoder, len(data.labels), model_args.cache_frozen_text)


VARIANTS: dict[str, Callable[..., nn.Module]] = {
    **{bridge: build_mmft(bridge) for bridge in BRIDGES},
    "vilt": build_vilt,
    "dual_encoder": build_dual_encoder,
}


def build_variant(name: str, model_args: Any, lora_args: Any, data: TaskData, options: dict) -> nn.Module:
    """Variant `name` built from the recipe's model and LoRA arguments, the prepared data and the study's options
    (`vilt_layers`, `vilt_patch_size`, `vocab_size`: the text tokenizer's, `mmft_config`: extra `MMFTConfig` fields)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name](model_args, lora_args, data, options)


def scale_tower_learning_rate(optimizer: torch.optim.Optimizer, model: nn.Module, scale: float) -> None:
    """Move every tower parameter into its own param group at `scale` x its group's lr (before the first step)."""
    tower_ids = {id(p) for name, p in model.named_parameters() if any(t in name for t in TOWER_MODULES)}
    for group in list(optimizer.param_groups):
        towers = [p for p in group["params"] if id(p) in tower_ids]
        if towers:
            group["params"] = [p for p in group["params"] if id(p) not in tower_ids]
            settings = {key: value for key, value in group.items() if key != "params"}
            optimizer.add_param_group({**settings, "params": towers, "lr": group["lr"] * scale})


def count_parameters(model: nn.Module) -> dict[str, int]:
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
