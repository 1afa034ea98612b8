"""On-the-fly preprocessing: a `set_transform` that decodes images and encodes labels, and a padding collator."""

from __future__ import annotations

import io
from typing import Any

import torch
from PIL import Image as PILImage

from ..image_utils import to_rgb
from .answers import answer_id, soft_scores
from .sources import DataError


def decode_image(image: dict[str, Any], where: str) -> PILImage.Image:
    """Open an undecoded `datasets` image ({"path", "bytes"}) and fully decode it, naming the file on failure."""
    source = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image.get("path")
    try:
        with PILImage.open(source) as opened:
            opened.load()
            return to_rgb(opened)
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as error:
        name = image.get("path") or "embedded bytes"
        raise DataError(f"{where}: cannot decode image {name} ({type(error).__name__}: {error})") from error


class VQATransform:
    """`dataset.set_transform(...)`: image -> pixel_values, answers -> labels (ids or soft scores), per batch."""

    def __init__(self, image_processor, label2id: dict[str, int], single_answer: bool, split: str = "train") -> None:
        self.image_processor = image_processor
        self.label2id = label2id
        self.single_answer = single_answer
        self.split = split

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        rows = batch.get("row", [None] * len(batch["question"]))
        images = [decode_image(image, f"split {self.split!r}, row {row}") for image, row in zip(batch["image"], rows)]
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
        encode = answer_id if self.single_answer else soft_scores
        return {
            "pixel_values": list(pixel_values),
            "question": batch["question"],
            "labels": [encode(answers, self.label2id) for answers in batch["answers"]],
        }


class VQACollator:
    """Tokenises a batch of questions (padded to the longest) and stacks pixels and labels."""

    def __init__(self, tokenizer, max_length: int = 64) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        text = self.tokenizer(
            [example["question"] for example in examples],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        labels = [example["labels"] for example in examples]
        return {
            "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "labels": torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels),
        }
