"""`VQAPipeline` (`mmft-vqa`): image + question -> the most likely answers."""

from __future__ import annotations

from ...pipeline import ImageTextPipeline


class VQAPipeline(ImageTextPipeline):
    """Image + question -> the `top_k` most likely answers with their scores."""

    text_key = "question"
    label_key = "answer"


__all__ = [
    "VQAPipeline",
]
