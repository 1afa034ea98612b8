"""`task_model`: the mmft task model (VQA, classification, retrieval, captioning) inside what wraps it for training.

A `LoraPlan` with adapters returns a peft `PeftModel` around the task model; code that asks the task model for its
towers, config or core (`.core`, the `MMFTModel`) goes through `task_model` so it works on either. It imports
nothing from mmft, so any module can use it without an import cycle.
"""

from __future__ import annotations

from torch import nn


def task_model(model: nn.Module) -> nn.Module:
    """The mmft model inside a peft wrapper (or the model itself); a TypeError for anything that is not mmft's."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(inner, "towers"):
        raise TypeError(f"{type(model).__name__} is not an mmft model")
    return inner


__all__ = ["task_model"]
