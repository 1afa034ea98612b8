"""`IGNORE_INDEX`: the label value every mmft loss skips.

It is -100, the default `ignore_index` of `torch.nn.functional.cross_entropy` and the value transformers' models and
collators use, so labels built by mmft also train under the stock losses. Two places write it: the padding of a
caption (`mmft.tasks.captioning.processing`) and a VQA answer outside the answer vocabulary
(`mmft.tasks.vqa.answers`); the captioning and VQA losses name it when they skip those positions and rows.
"""

from __future__ import annotations

IGNORE_INDEX = -100

__all__ = ["IGNORE_INDEX"]
