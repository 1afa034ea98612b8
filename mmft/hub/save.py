"""The final save: model (merged, or a LoRA adapter with its base config), processor and the run's extra files,
written all or nothing.

Everything goes to a temporary folder inside `output_dir` first and is loaded back from there; only then is each file
moved into place (`save_final`). Under DeepSpeed ZeRO-3 the weights are gathered around the save (`full_parameters`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..file_modes import give_ordinary_modes
from ..lora import LoraPlan
from ..unwrap import task_model


@contextlib.contextmanager
def full_parameters(trainer) -> Iterator[None]:
    """Inside: every parameter of the trained model is whole on every process, so it can be merged and saved.

    Only DeepSpeed ZeRO-3 needs this: it partitions even frozen weights, and `save_pretrained` on the partitioned
    model would write empty tensors for every weight above its persistence threshold. Enter it on all processes
    (the gather is collective); changes made inside are dropped on exit, which is fine for a final save.
    """
    engine = getattr(trainer, "deepspeed", None)
    if engine is None or engine.zero_optimization_stage() != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(trainer.model.parameters()), modifier_rank=None):
        yield


STAGING_PREFIX = ".final-"  # the temporary folder inside output_dir a final save is written to first
# A final save's weight files: one save's must never sit beside another's (an adapter_config.json beside a merged
# model makes transformers load the folder as an adapter).
WEIGHT_FILE_PATTERNS = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "adapter_config.json",
)


def _loading_problems(folder: Path, final, adapter: bool) -> list[str]:
    """Why the model saved in `folder` does not load back whole (empty: it does)."""
    from safetensors import safe_open
    from transformers.integrations import is_deepspeed_zero3_enabled

    if adapter:
        from peft import get_peft_model_state_dict

        with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
            saved = set(handle.keys())
        expected = set(get_peft_model_state_dict(final).keys())
        return [f"adapter keys missing: {sorted(expected - saved)[:5]}"] if expected - saved else []
    if is_deepspeed_zero3_enabled():
        # from_pretrained would partition the copy across processes that are not loading it: read the headers only
        for path in folder.glob("*.safetensors"):
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        return []
    _, info = type(final).from_pretrained(folder, output_loading_info=True, use_safetensors=True)
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
    return [f"{kind}: {sorted(map(str, info[kind]))[:5]}" for kind in kinds if info.get(kind)]


def _is_weights(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in WEIGHT_FILE_PATTERNS)


def _publish(staging: Path, output_dir: Path) -> None:
    """Move every file of `staging` into `output_dir` (os.replace: each file whole), weights last; then delete the
    previous save's weight files that the new one does not have (e.g. an adapter beside a merged model)."""
    new = sorted(p.name for p in staging.iterdir())
    for name in sorted(new, key=_is_weights):
        target = output_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    for stale in output_dir.iterdir():
        if stale.is_file() and _is_weights(stale.name) and stale.name not in new:
            stale.unlink()


def save_final(
    model, processor, output_dir: str | Path, merged: bool, extras: Callable[[Path, Any], None] | None = None
) -> Any:
    """Save the final model all or nothing; returns what was saved (the merged model, or the peft model).

    The merged model (or the peft adapter plus the base config), the processor and whatever `extras(folder, final)`
    writes (predictions, results, card) go to a temporary folder inside `output_dir` first; the model is loaded back
    from there, and only then is each file moved into place. A full disk, a kill or a model that does not load back
    leaves the previous final model in `output_dir` as it was.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for leftover in output_dir.glob(f"{STAGING_PREFIX}*"):  # a save killed before its move
        shutil.rmtree(leftover, ignore_errors=True)
    adapter = hasattr(model, "peft_config") and not merged
    final = model if adapter else LoraPlan.merge(model)  # merging a plain model only dequantizes (QLoRA)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir))
    try:
        final.save_pretrained(staging)
        if adapter:  # what `load_adapter_model` rebuilds the base from, and which head class
            inner = task_model(model)
            inner.config.architectures = [type(inner).__name__]
            inner.config.save_pretrained(staging)
        processor.save_pretrained(staging)
        if extras is not None:
            extras(staging, final)
        problems = _loading_problems(staging, final, adapter)
        if problems:
            raise ValueError(
                f"the final model saved to {staging} does not load back ({'; '.join(problems)}); "
                f"the previous contents of {output_dir} are kept"
            )
        give_ordinary_modes(staging)  # safetensors writes weights as 0600 (mmft.file_modes)
        _publish(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


__all__ = ["STAGING_PREFIX", "WEIGHT_FILE_PATTERNS", "full_parameters", "save_final"]
