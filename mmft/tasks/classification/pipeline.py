"""`ImageTextClassificationPipeline` (`mmft-image-text-classification`): image + text -> labels."""

from __future__ import annotations

from typing import Any

import torch

from ...pipeline import ImageTextPipeline


class ImageTextClassificationPipeline(ImageTextPipeline):
    """Image + text -> labels with their scores (all labels by default, best first)."""

    def postprocess(self, model_outputs: dict[str, torch.Tensor], top_k: int | None = None) -> list[dict[str, Any]]:
        return super().postprocess(model_outputs, top_k or self.model.config.num_labels)


__all__ = [
    "ImageTextClassificationPipeline",
]
