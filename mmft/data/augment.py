"""Training-time image augmentation (`--augment`), from torchvision's transforms v2, on training batches only.

Policies are mild on purpose: a question or caption may name a colour, a position or a size, and an augmentation
that changes what the text says about the image teaches the model wrong answers. So no policy changes hue or
saturation, and none flips left-right unless asked (`--augment_flip`, for data whose texts never say left or right).

* `light`: `RandomResizedCrop` (area 80-100% of the image, aspect ratio 0.9-1.1, back to the image's own size) and
  `ColorJitter` of brightness and contrast only (each by up to 20%).
* `crop`: the crop alone.

The augmentation runs on the decoded image, before the image processor's own resize and normalisation, so every
tower family sees it the same way. Each example draws from its own generator, seeded by (`--seed`, epoch, row): an
image gets another draw each epoch, the same in every run with the same seed, whichever DataLoader worker or process
decodes it and whenever (the Trainer reads batches ahead), and a resumed run redraws exactly what the uninterrupted
run drew. The global RNG (dropout's) is left untouched. The epoch comes from `AugmentationEpochCallback`; with
`--dataloader_persistent_workers` the workers keep the epoch they started with, so each epoch repeats the first one's
draws.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import torch
from PIL import Image as PILImage

POLICIES = ("none", "light", "crop")
CROP_SCALE, CROP_RATIO = (0.8, 1.0), (0.9, 1.1)
BRIGHTNESS = CONTRAST = 0.2


class TrainAugmentation:
    """`image, key -> image`: the `policy`'s random transform of a decoded PIL image, drawn from a generator seeded by
    (`seed`, `epoch`, `key`), where `key` names the example (its row)."""

    def __init__(self, policy: str = "light", flip: bool = False, seed: int = 0) -> None:
        if policy not in POLICIES or policy == "none":
            raise ValueError(f"augmentation policy {policy!r}; choose one of {', '.join(POLICIES[1:])}")
        self.policy, self.flip, self.seed, self.epoch = policy, flip, seed, 0
        self._unnamed = itertools.count()  # stand-in keys for rows without a name (then draws are not reproducible)

    def transform(self, size: tuple[int, int]):
        """The torchvision v2 transform for an image of `size` (width, height)."""
        from torchvision.transforms import v2

        steps: list[Any] = [v2.RandomResizedCrop((size[1], size[0]), scale=CROP_SCALE, ratio=CROP_RATIO)]
        if self.policy == "light":
            steps.append(v2.ColorJitter(brightness=BRIGHTNESS, contrast=CONTRAST))
        if self.flip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
        return v2.Compose(steps)

    def example_seed(self, key: Any) -> int:
        text = f"{self.seed}/{self.epoch}/{next(self._unnamed) if key is None else key}"
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1

    def __call__(self, image: PILImage.Image, key: Any = None) -> PILImage.Image:
        with torch.random.fork_rng(devices=[]):  # the CPU generator only, restored after: dropout's draws stay
            torch.manual_seed(self.example_seed(key))
            return self.transform(image.size)(image)

    def describe(self) -> str:
        """One sentence for the model card and the logs."""
        crop = (
            f"RandomResizedCrop (area {CROP_SCALE[0]:.0%}-{CROP_SCALE[1]:.0%}, aspect ratio "
            f"{CROP_RATIO[0]}-{CROP_RATIO[1]}, back to the image's size)"
        )
        parts = [crop]
        if self.policy == "light":
            parts.append(f"ColorJitter (brightness and contrast up to {BRIGHTNESS:.0%}; no hue or saturation change)")
        parts.append("horizontal flip (p=0.5)" if self.flip else "no horizontal flip")
        return (
            f"`{self.policy}`: " + ", ".join(parts) + "; training batches only, before the image processor; "
            f"each example's draw seeded by (seed {self.seed}, epoch, row)"
        )


def make_augmentation(policy: str | None, flip: bool = False, seed: int = 0) -> TrainAugmentation | None:
    """The augmentation of `--augment` / `--augment_flip` (None for `none`)."""
    if policy in (None, "none"):
        if flip:
            raise ValueError("--augment_flip needs an --augment policy (light or crop)")
        return None
    return TrainAugmentation(policy, flip, seed)


__all__ = ["POLICIES", "TrainAugmentation", "make_augmentation"]
