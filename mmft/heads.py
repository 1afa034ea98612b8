"""Heads: `ClassificationHead` and `MMFTForPooledClassification` (the base of the task models that classify the
bridge's pooled summary: VQA, image-text classification), and the dual encoder's `ContrastiveHead` / `LogitScale`
over the towers' pooled features (retrieval)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers.utils import can_return_tuple

from .configuration_mmft import MMFTConfig
from .modeling_mmft import MMFTClassifierOutput, MMFTModel, MMFTPreTrainedModel


class ClassificationHead(nn.Sequential):
    """MLP over the pooled summary -> one logit per label: Linear, GELU, LayerNorm, Linear."""

    def __init__(self, pooled_size: int, num_labels: int, layer_norm_eps: float = 1e-6) -> None:
        super().__init__(
            nn.Linear(pooled_size, pooled_size),
            nn.GELU(),
            nn.LayerNorm(pooled_size, eps=layer_norm_eps),
            nn.Linear(pooled_size, num_labels),
        )


class MMFTForPooledClassification(MMFTPreTrainedModel):
    """`MMFTModel` + a `ClassificationHead` over `config.id2label`; subclasses say what the loss is (`loss`)."""

    has_labels = True
    head_name = "a classification head"  # for the error when the label vocabulary is too small

    def __init__(self, config: MMFTConfig, vision_tower=None, text_tower=None) -> None:
        super().__init__(config)
        if not config.id2label or config.num_labels < 2:
            raise ValueError(f"{self.head_name} needs at least 2 labels (labels=[...] / id2label)")
        self.check_config(config)
        # read as `self.core`; the attribute's name is the `mmft.` prefix of every checkpoint key (base_model_prefix)
        self.mmft = MMFTModel(config, vision_tower, text_tower)
        self.classifier = ClassificationHead(self.core.bridge.pooled_size, config.num_labels, config.layer_norm_eps)
        self.post_init()

    def check_config(self, config: MMFTConfig) -> None:
        """Refuse task fields the head cannot use, before any module is built."""

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> MMFTClassifierOutput:
        """Logits `(B, num_labels)` and, with `labels`, the loss. The output flags default to the config fields;
        `return_dict=False` (or `config.return_dict=False`) returns `MMFTClassifierOutput.to_tuple()`."""
        flags = self.output_flags(output_attentions, output_hidden_states)
        outputs = self.core(pixel_values, input_ids, attention_mask, *flags, return_dict=True)
        logits = self.classifier(outputs.pooled)  # (B, num_labels)
        loss = self.loss(logits, labels) if labels is not None else None
        # Extras only on request: the Trainer gathers every tensor an output holds during evaluation.
        return MMFTClassifierOutput.of_head(loss, logits, outputs, extras=any(flags))


class LogitScale(nn.Module):
    """CLIP's learnable temperature, kept as log(1 / T); `forward()` gives the scale 1 / T, at most 100."""

    MAX_SCALE = 100.0

    def __init__(self, init_value: float) -> None:
        super().__init__()
        self.init_value = init_value
        self.log_scale = nn.Parameter(torch.tensor(float(init_value)))

    def reset_parameters(self) -> None:
        """Initialise the bare parameter (`_init_weights` asks every module holding one); `nn.init` rather than an
        in-place fill, so transformers' init guard leaves a loaded value as it is."""
        nn.init.constant_(self.log_scale, self.init_value)

    def forward(self) -> torch.Tensor:
        # A clamp rather than CLIP's in-place clip of the parameter: same effect, and nothing to do after each step.
        return self.log_scale.clamp(max=math.log(self.MAX_SCALE)).exp()


class ContrastiveHead(nn.Module):
    """The dual encoder's part: a projection per tower into the shared embedding space, and the temperature."""

    def __init__(self, width: int, projection_dim: int, logit_scale_init_value: float) -> None:
        super().__init__()
        self.image_projection = nn.Linear(width, projection_dim, bias=False)
        self.text_projection = nn.Linear(width, projection_dim, bias=False)
        self.logit_scale = LogitScale(logit_scale_init_value)


__all__ = ["ClassificationHead", "ContrastiveHead", "LogitScale", "MMFTForPooledClassification"]
