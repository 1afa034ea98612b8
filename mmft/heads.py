"""Heads over the bridge's pooled summary: `ClassificationHead`, and `MMFTForPooledClassification`, the base of the
task models that classify with it (VQA over an answer vocabulary, image-text classification over labels)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> MMFTClassifierOutput:
        outputs = self.mmft(pixel_values, input_ids, attention_mask, output_attentions=output_attentions)
        logits = self.classifier(outputs.pooled)  # (B, num_labels)
        # Extras only on request: the Trainer gathers every tensor an output holds during evaluation.
        return MMFTClassifierOutput(
            loss=self.loss(logits, labels) if labels is not None else None,
            logits=logits,
            pooled=outputs.pooled if output_attentions else None,
            cross_attentions=outputs.cross_attentions,
            image_grid=outputs.image_grid if output_attentions else None,
        )


__all__ = ["ClassificationHead", "MMFTForPooledClassification"]
