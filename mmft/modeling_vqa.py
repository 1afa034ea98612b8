"""`MMFTForVisualQuestionAnswering`: VQA as classification over an answer vocabulary (`config.id2label`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .configuration_mmft import MMFTConfig
from .heads import ClassificationHead
from .modeling_mmft import MMFTClassifierOutput, MMFTModel, MMFTPreTrainedModel


class MMFTForVisualQuestionAnswering(MMFTPreTrainedModel):
    """
    VQA as classification over an answer vocabulary (`config.id2label`).

    `labels` are either soft scores `(B, num_answers)` (BCE-with-logits scaled by the number of answers, the VQAv2
    convention) or answer ids `(B,)` (cross-entropy, for single-answer datasets such as easy-VQA).
    """

    has_labels = True

    def __init__(self, config: MMFTConfig, vision_tower=None, text_tower=None) -> None:
        super().__init__(config)
        if not config.id2label or config.num_labels < 2:
            raise ValueError("a VQA head needs an answer vocabulary of at least 2 answers (answers=[...] / id2label)")
        self.mmft = MMFTModel(config, vision_tower, text_tower)
        self.classifier = ClassificationHead(self.mmft.bridge.pooled_size, config.num_labels, config.layer_norm_eps)
        self.post_init()

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
        logits = self.classifier(outputs.pooled)  # (B, num_answers)
        loss = None
        if labels is not None:
            if labels.dtype.is_floating_point:  # soft scores (B, K)
                loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)) * labels.shape[1]
            else:  # answer ids (B,)
                loss = F.cross_entropy(logits, labels)
        # Extras only on request: the Trainer gathers every tensor an output holds during evaluation.
        return MMFTClassifierOutput(
            loss=loss,
            logits=logits,
            pooled=outputs.pooled if output_attentions else None,
            cross_attentions=outputs.cross_attentions,
            image_grid=outputs.image_grid if output_attentions else None,
        )


__all__ = ["MMFTForVisualQuestionAnswering"]
