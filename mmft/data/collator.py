"""On-the-fly preprocessing shared by every task: a `set_transform` that decodes images, and a padding collator.

The transform turns a batch of rows into `pixel_values`, the row's text (under `text`) and whatever the task's
`encode` makes of its targets (`labels`, ...). Under `--on_bad_example skip`, an image that only fails when fully
decoded (e.g. a truncated file whose header is fine) is recorded by the transform, in whichever DataLoader worker
meets it. A training row is then flagged and dropped by the collator; an eval row keeps a blank image so predictions
stay aligned with the references, and is left out of the metric (see `excluded_eval_positions`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image as PILImage

from ..image_utils import ImageDataError, image_source, load_rgb
from ..input_checks import TruncationReporter
from .rejects import BadExample, BadExamplePolicy
from .sources import DataError

SKIP_KEY = "skipped_bad_example"  # set on a training example the collator must drop
TEXT_KEY = "text"  # the text the collator tokenises, whatever the task's column is called
ROW_KEY = "row_key"  # a streamed example's name (shard/key); carried to the collator for tracing, never batched


def decode_image(image: dict[str, Any] | None, where: str) -> PILImage.Image:
    """Open an undecoded `datasets` image ({"path", "bytes"}) and fully decode it to RGB, naming the file on failure."""
    source, name = image_source(image)
    if source is None:
        raise DataError(f"{where}: no image")
    try:
        return load_rgb(source)  # the decode every inference entry point uses too
    except ImageDataError as error:
        raise DataError(f"{where}: cannot decode image {name} ({error})") from error


class ImageTextTransform:
    """
    `dataset.set_transform(...)`: image -> `pixel_values`, `text_column` -> `text`, targets -> `encode(batch)`.

    Args:
        image_processor: the vision tower's image processor.
        text_column: the row column holding the text (None: image-only rows).
        encode: batch (dict of lists) -> extra output columns, e.g. `{"labels": [...]}`.
        split: "train" or "eval", for messages and the bad-example ledger.
        policy: the bad-example policy; None raises on any undecodable image.
        augment: `(image, row) -> image` applied to each decoded image before the image processor, on the "train"
            split only (`mmft.data.augment.TrainAugmentation`); None: none.
    """

    def __init__(
        self,
        image_processor,
        text_column: str | None,
        encode: Callable[[dict[str, list]], dict[str, list]] | None = None,
        split: str = "train",
        policy: BadExamplePolicy | None = None,
        augment: Callable[[PILImage.Image, Any], PILImage.Image] | None = None,
    ) -> None:
        self.image_processor = image_processor
        self.text_column = text_column
        self.encode = encode
        self.split = split
        self.policy = policy
        self.augment = augment

    def _image(self, image: dict[str, Any] | None, row: int | None) -> tuple[PILImage.Image, bool]:
        """(the decoded image, False), or under `skip` (a blank stand-in, True) for an undecodable one."""
        try:
            return decode_image(image, f"split {self.split!r}, row {row}"), False
        except DataError as error:
            if self.policy is None or self.policy.mode == "raise" or row is None:
                raise
            self.policy.handle(
                BadExample(self.split, row, image_source(image)[1], str(error.__cause__ or error), "decode")
            )
            return PILImage.new("RGB", (8, 8)), True

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        rows = batch.get("row", [None] * len(batch["image"]))
        images, bad = zip(*(self._image(image, row) for image, row in zip(batch["image"], rows)))
        if self.augment is not None and self.split == "train":
            images = [image if skip else self.augment(image, row) for image, skip, row in zip(images, bad, rows)]
        pixel_values = self.image_processor(list(images), return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
        out: dict[str, list] = {"pixel_values": list(pixel_values)}
        if self.text_column is not None:
            out[TEXT_KEY] = batch[self.text_column]
        if self.encode is not None:
            out.update(self.encode(batch))
        if self.split == "train":
            out[SKIP_KEY] = list(bad)
        return out


def split_transform(dataset) -> Any:
    """The on-the-fly transform a task's `attach` set on `dataset` (a `datasets.Dataset` or a stream), or None."""
    if hasattr(dataset, "format"):  # datasets.Dataset
        return dataset.format["format_kwargs"].get("transform")
    return getattr(dataset, "transform", None)  # mmft.data.streaming.TrainStream


def set_train_augmentation(dataset, augment: Callable[[PILImage.Image, Any], PILImage.Image] | None) -> None:
    """Give the training split's `ImageTextTransform` (set by the task's `attach`) its augmentation."""
    transform = split_transform(dataset)
    if not isinstance(transform, ImageTextTransform):
        if augment is None:
            return
        raise ValueError(
            f"--augment applies to an ImageTextTransform and this task's training split has "
            f"{type(transform).__name__}; train without --augment"
        )
    transform.augment = augment


def stack(values: list[Any]) -> torch.Tensor:
    """One batch tensor from per-example tensors, numbers or lists of numbers."""
    return torch.stack(values) if isinstance(values[0], torch.Tensor) else torch.tensor(values)


class ImageTextCollator:
    """Tokenises a batch's texts (padded to the longest), stacks pixels and every other field (labels, ...).

    Drops training examples flagged as bad; a batch with none left reuses the last good example of this worker
    (a batch must not be empty), which only happens when every row of a batch is unreadable.
    """

    def __init__(self, tokenizer, max_length: int = 64, what: str = "text") -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = TruncationReporter(max_length, what)
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

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        self.truncation.check(self.tokenizer, texts, encoded["attention_mask"])
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        examples = self._keep_good(examples)
        batch = {"pixel_values": stack([example["pixel_values"] for example in examples])}
        if TEXT_KEY in examples[0]:
            batch.update(self.tokenize([example[TEXT_KEY] for example in examples]))
        for key in examples[0].keys() - {"pixel_values", TEXT_KEY, SKIP_KEY, ROW_KEY}:
            batch[key] = stack([example[key] for example in examples])
        return batch


def excluded_eval_positions(policy: BadExamplePolicy | None, rows: list[int], split: str = "eval") -> set[int]:
    """Positions (in the held-out split as evaluated: "eval", the test split, or "validation") of rows rejected
    while decoding; they are not scored."""
    if policy is None or policy.mode != "skip":
        return set()
    rejected = policy.rejected(split)
    return {position for position, row in enumerate(rows) if row in rejected}
