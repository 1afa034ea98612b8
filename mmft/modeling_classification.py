"""`MMFTForImageTextClassification`: image + text -> label(s): single-label, multi-label or binary."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .configuration_mmft import MMFTConfig
from .heads import ClassificationHead
from .modeling_mmft import MMFTClassifierOutput, MMFTModel, MMFTPreTrainedModel

SINGLE_LABEL, MULTI_LABEL = "single_label_classification", "multi_label_classification"


class MMFTForImageTextClassification(MMFTPreTrainedModel):
    """
    Classifies an (image, text) pair: visual entailment, hateful memes, multimodal sentiment.

    `config.problem_type` decides the loss: `single_label_classification` (softmax cross-entropy over label ids
    `(B,)`; binary tasks are two labels) or `multi_label_classification` (a sigmoid per label, BCE over multi-hot
    labels `(B, num_labels)`). `config.class_weights` (one per label) weight the cross-entropy classes, or are the
    per-label `pos_weight` of the BCE.
    """

    has_labels = True

    def __init__(self, config: MMFTConfig, vision_tower=None, text_tower=None) -> None:
        super().__init__(config)
        if not config.id2label or config.num_labels < 2:
            raise ValueError("a classification head needs at least 2 labels (labels=[...] / id2label)")
        if config.problem_type not in (None, SINGLE_LABEL, MULTI_LABEL):
            raise ValueError(f"problem_type {config.problem_type!r}: use {SINGLE_LABEL!r} or {MULTI_LABEL!r}")
        if config.class_weights is not None and len(config.class_weights) != config.num_labels:
            raise ValueError(f"class_weights has {len(config.class_weights)} values for {config.num_labels} labels")
        self.mmft = MMFTModel(config, vision_tower, text_tower)
        self.classifier = ClassificationHead(self.mmft.bridge.pooled_size, config.num_labels, config.layer_norm_eps)
        self.post_init()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = None
        if self.config.class_weights is not None:
            weights = torch.tensor(self.config.class_weights, dtype=logits.dtype, device=logits.device)
        if self.config.problem_type == MULTI_LABEL or labels.dtype.is_floating_point:  # multi-hot (B, K)
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=weights)
        return F.cross_entropy(logits, labels, weight=weights)  # label ids (B,)

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
        return MMFTClassifierOutput(
            loss=self.loss(logits, labels) if labels is not None else None,
            logits=logits,
            pooled=outputs.pooled if output_attentions else None,
            cross_attentions=outputs.cross_attentions,
            image_grid=outputs.image_grid if output_attentions else None,
        )


__all__ = ["MMFTForImageTextClassification", "MULTI_LABEL", "SINGLE_LABEL"]
