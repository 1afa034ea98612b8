"""`MMFTForImageTextClassification`: image + text -> label(s): single-label, multi-label or binary."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...auto import new_auto_class
from ...configuration_mmft import MMFTConfig
from ...heads import MMFTForPooledClassification
from .pipeline import ImageTextClassificationPipeline

SINGLE_LABEL, MULTI_LABEL = "single_label_classification", "multi_label_classification"

AutoModelForImageTextClassification = new_auto_class(
    "AutoModelForImageTextClassification",
    "Loads an image-text classification model (e.g. `MMFTForImageTextClassification`) from a saved folder.",
)


class MMFTForImageTextClassification(MMFTForPooledClassification):
    """
    Classifies an (image, text) pair: visual entailment, hateful memes, multimodal sentiment.

    `config.problem_type` decides the loss: `single_label_classification` (softmax cross-entropy over label ids
    `(B,)`; binary tasks are two labels) or `multi_label_classification` (a sigmoid per label, BCE over multi-hot
    labels `(B, num_labels)`). `config.class_weights` (one per label) weight the cross-entropy classes, or are the
    per-label `pos_weight` of the BCE.
    """

    auto_class, pipeline_class = AutoModelForImageTextClassification, ImageTextClassificationPipeline
    pipeline_task = "mmft-image-text-classification"

    def check_config(self, config: MMFTConfig) -> None:
        if config.problem_type not in (None, SINGLE_LABEL, MULTI_LABEL):
            raise ValueError(f"problem_type {config.problem_type!r}: use {SINGLE_LABEL!r} or {MULTI_LABEL!r}")
        if config.class_weights is not None and len(config.class_weights) != config.num_labels:
            raise ValueError(f"class_weights has {len(config.class_weights)} values for {config.num_labels} labels")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = None
        if self.config.class_weights is not None:
            weights = torch.tensor(self.config.class_weights, dtype=logits.dtype, device=logits.device)
        if self.config.problem_type == MULTI_LABEL or labels.dtype.is_floating_point:  # multi-hot (B, K)
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=weights)
        return F.cross_entropy(logits, labels, weight=weights)  # label ids (B,)


__all__ = ["AutoModelForImageTextClassification", "MMFTForImageTextClassification", "MULTI_LABEL", "SINGLE_LABEL"]
