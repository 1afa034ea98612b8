"""`ImageTextMatchingPipeline` (`mmft-image-text-retrieval`): image + text -> match / no match."""

from __future__ import annotations

from typing import Any

import torch

from ...pipeline import ImageTextPipeline


class ImageTextMatchingPipeline(ImageTextPipeline):
    """Image + text -> how well they match, from the retrieval model's matching head over the bridge: `match` and
    `no match` with their probabilities. (Searching a whole gallery is `mmft search`, which embeds it once.)"""

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.model.match(**model_inputs)}  # (B, 2): [no match, match]

    def postprocess(self, model_outputs: dict[str, torch.Tensor], top_k: int | None = None) -> list[dict[str, Any]]:
        return super().postprocess(model_outputs, top_k or 2)


__all__ = [
    "ImageTextMatchingPipeline",
]
