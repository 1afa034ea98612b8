"""`MMFTForVisualQuestionAnswering`: VQA as classification over an answer vocabulary (`config.id2label`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoModelForVisualQuestionAnswering

from ...heads import MMFTForPooledClassification
from ...labels import IGNORE_INDEX
from .pipeline import VQAPipeline


class MMFTForVisualQuestionAnswering(MMFTForPooledClassification):
    """
    VQA as classification over an answer vocabulary (`config.id2label`).

    `labels` are either soft scores `(B, num_answers)` (BCE-with-logits scaled by the number of answers, the VQAv2
    convention) or answer ids `(B,)` (cross-entropy, for single-answer datasets such as easy-VQA).
    """

    head_name = "a VQA head (over an answer vocabulary)"
    auto_class, pipeline_task, pipeline_class = AutoModelForVisualQuestionAnswering, "mmft-vqa", VQAPipeline

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.dtype.is_floating_point:  # soft scores (B, K)
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)) * labels.shape[1]
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)  # answer ids (B,); unknown answers skipped


__all__ = ["MMFTForVisualQuestionAnswering"]
