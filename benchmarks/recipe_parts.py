"""Run the VQA recipe's own code path (`mmft.training.run`) up to its first training step.

The benchmarks measure exactly what `accelerate launch recipes/vqa.py` builds from the default preset: the same
model after its `LoraPlan`, the same dataset with its on-the-fly transform, the Trainer's own DataLoader and
collator, the same TrainingArguments. Nothing is rebuilt by hand, so the benchmarks follow the recipe as it changes.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from typing import Any

from harness import PRESET
from transformers import TrainerCallback, TrainingArguments


def recipe_argv(output_dir: str, max_steps: int, device: str, quick: bool, *extra: str) -> list[str]:
    """The default preset, with only what a benchmark must change: step count, no eval/save, a scratch folder."""
    argv = [
        "--config",
        PRESET,
        "--output_dir",
        output_dir,
        "--max_steps",
        str(max_steps),
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--max_eval_samples",
        "32",
        "--report_to",
        "none",
    ]
    if quick:  # a smoke run: the preset's model on small batches
        argv += ["--max_train_samples", "1024", "--per_device_train_batch_size", "8"]
    if device.startswith("cuda"):
        argv += ["--bf16", "true"]  # the GPU precision; on a CPU the preset's fp32 stands
    return argv + list(extra)


def run_recipe(argv: list[str], callbacks: list[TrainerCallback]) -> None:
    """`mmft.training.run` exactly as `recipes/vqa.py` calls it, with extra Trainer callbacks."""
    from mmft import parse_recipe_args
    from mmft.training import run

    run("vqa", parse_recipe_args(argv, "vqa"), callbacks=callbacks)


@dataclass
class RecipeParts:
    model: Any  # the model the Trainer trains (after the preset's LoraPlan, text cache enabled)
    train_dataloader: Any  # the Trainer's own DataLoader: dataset + transform + collator + preset workers
    args: TrainingArguments
    optimizer: Any


class _Captured(Exception):
    pass


class _Capture(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, optimizer=None, **kwargs):
        raise _Captured(RecipeParts(model, train_dataloader, args, optimizer))


@functools.lru_cache(maxsize=1)
def capture_recipe(device: str = "cpu", quick: bool = False, *extra: str) -> RecipeParts:
    """The recipe's model, DataLoader and arguments as they are when training begins (training is not run).

    Cached: callers deep-copy the model before training it, so one capture serves several benchmarks.
    """
    with tempfile.TemporaryDirectory() as output_dir:
        try:
            run_recipe(recipe_argv(output_dir, 1, device, quick, *extra), [_Capture()])
        except _Captured as captured:
            return captured.args[0]
    raise RuntimeError("the recipe finished without starting training; cannot capture its parts")
