"""On-the-fly preprocessing: a `set_transform` that decodes images and encodes labels, and a padding collator.

Under `--on_bad_example skip`, an image that only fails when fully decoded (e.g. a truncated file whose header is
fine) is recorded by the transform, in whichever DataLoader worker meets it. A training row is then flagged and
dropped by the collator; an eval row keeps a blank image so predictions stay aligned with the references, and is
left out of the metric (see `excluded_eval_positions`).
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image as PILImage

from ..image_utils import ImageDataError, image_source, open_image, to_rgb
from ..input_checks import TruncationReporter
from .answers import answer_id, soft_scores
from .rejects import BadExample, BadExamplePolicy
from .sources import DataError

SKIP_KEY = "skipped_bad_example"  # set on a training example the collator must drop


def decode_image(image: dict[str, Any] | None, where: str) -> PILImage.Image:
    """Open an undecoded `datasets` image ({"path", "bytes"}) and fully decode it to RGB, naming the file on failure."""
    source, name = image_source(image)
    if source is None:
        raise DataError(f"{where}: no image")
    try:
        with open_image(source) as opened:
            return to_rgb(opened)
    except ImageDataError as error:
        raise DataError(f"{where}: cannot decode image {name} ({error})") from error


class VQATransform:
    """`dataset.set_transform(...)`: image -> pixel_values, answers -> labels (ids or soft scores), per batch."""

    def __init__(
        self,
        image_processor,
        label2id: dict[str, int],
        single_answer: bool,
        split: str = "train",
        policy: BadExamplePolicy | None = None,
    ) -> None:
        self.image_processor = image_processor
        self.label2id = label2id
        self.single_answer = single_answer
        self.split = split
        self.policy = policy

    def _image(self, image: dict[str, Any] | None, row: int | None) -> tuple[PILImage.Image, bool]:
        """(the decoded image, False), or under `skip` (a blank stand-in, True) for an undecodable one."""
        try:
            return decode_image(image, f"split {self.split!r}, row {row}"), False
        except DataError as error:
            if self.policy is None or self.policy.mode == "raise" or row is None:
                raise
            self.policy.handle(BadExample(self.split, row, image_source(image)[1], str(error.__cause__ or error), "decode"))
            return PILImage.new("RGB", (8, 8)), True

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        rows = batch.get("row", [None] * len(batch["question"]))
        images, bad = zip(*(self._image(image, row) for image, row in zip(batch["image"], rows)))
        pixel_values = self.image_processor(list(images), return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
        encode = answer_id if self.single_answer else soft_scores
        out = {
            "pixel_values": list(pixel_values),
            "question": batch["question"],
            "labels": [encode(answers, self.label2id) for answers in batch["answers"]],
        }
        if self.split == "train":
            out[SKIP_KEY] = list(bad)
        return out


class VQACollator:
    """Tokenises a batch of questions (padded to the longest) and stacks pixels and labels.

    Drops training examples flagged as bad; a batch with none left reuses the last good example of this worker
    (a batch must not be empty), which only happens when every row of a batch is unreadable.
    """

    def __init__(self, tokenizer, max_length: int = 64) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = TruncationReporter(max_length)
        self._last_good: dict[str, Any] | None = None

    def _keep_good(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = [example for example in examples if not example.get(SKIP_KEY)]
        if kept:
            self._last_good = kept[-1]
            return kept
        if self._last_good is None:
            raise DataError(
                f"all {len(examples)} examples of a batch were unreadable and no earlier good example exists to stand "
                "in; see the rejects file, and check the data (or use a larger batch size)"
            )
        return [self._last_good]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        examples = self._keep_good(examples)
        questions = [example["question"] for example in examples]
        text = self.tokenizer(
            questions,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        self.truncation.check(self.tokenizer, questions, text["attention_mask"])
        labels = [example["labels"] for example in examples]
        return {
            "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "labels": torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels),
        }


def excluded_eval_positions(policy: BadExamplePolicy | None, rows: list[int]) -> set[int]:
    """Positions (in the eval split as evaluated) of rows rejected while decoding; they are not scored."""
    if policy is None or policy.mode != "skip":
        return set()
    rejected = policy.rejected("eval")
    return {position for position, row in enumerate(rows) if row in rejected}
