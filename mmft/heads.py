"""Heads over the bridge's pooled summary: `ClassificationHead`, and `MMFTForPooledClassification`, the base of the
task models that classify with it (VQA over an answer vocabulary, image-text classification over labels)."""

from __future__ import annotations

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
        self.mmft = MMFTModel(config, vision_tower, text_tower)
        self.classifier = ClassificationHead(self.mmft.bridge.pooled_size, config.num_labels, config.layer_norm_eps)
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
        outputs = self.mmft(pixel_values, input_ids, attention_mask, *flags, return_dict=True)
        logits = self.classifier(outputs.pooled)  # (B, num_labels)
        loss = self.loss(logits, labels) if labels is not None else None
        # Extras only on request: the Trainer gathers every tensor an output holds during evaluation.
        return MMFTClassifierOutput.of_head(loss, logits, outputs, extras=any(flags))


__all__ = ["ClassificationHead", "MMFTForPooledClassification"]
