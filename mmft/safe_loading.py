"""Weights are read from safetensors only: the check every mmft loading entry point makes first.

Left alone, transformers (`from_pretrained` without `use_safetensors=True`) and peft (`PeftModel.from_pretrained`)
fall back to a pickled `pytorch_model.bin` / `adapter_model.bin` whenever no safetensors file is there, and unpickle
it with `torch.load(weights_only=True)`. That refuses code, but it is still a pickle parser run on downloaded bytes;
mmft refuses such a checkpoint instead, naming the file and the one-time conversion. A caller that passes
`use_safetensors` as False to a model's `from_pretrained` gets transformers' behaviour: the only way mmft reads a
model pickle.
"""

from __future__ import annotations

import os
from pathlib import Path

# kind -> (safetensors files, pickled files) of a checkpoint folder
WEIGHT_FILES = {
    "model": (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ),
    "adapter": (("adapter_model.safetensors",), ("adapter_model.bin",)),
}


class PickledWeightsError(OSError):
    """A checkpoint whose weights exist only as a pickle."""


def _refusal(source: str, found: str, kind: str) -> PickledWeightsError:
    loader = (
        "the model class's from_pretrained with `use_safetensors` passed as False"
        if kind == "model"
        else ("peft's PeftModel.from_pretrained")
    )
    return PickledWeightsError(
        f"{source}: mmft loads {kind} weights from safetensors only; this checkpoint has {found}. Where you trust "
        f"the file, convert it once: load it with {loader} (it reads the pickle with torch.load(weights_only=True)) "
        "and save it again with save_pretrained."
    )


def refuse_pickled_weights(source: str | os.PathLike | None, kind: str = "model", subfolder: str = "") -> None:
    """Raise `PickledWeightsError` (an OSError) when the local folder `source` holds `kind` weights only as a pickle.

    Hub ids are left to the caller's loader, run with `use_safetensors=True` (models) or after
    `require_safetensors_adapter` (adapters), so that only safetensors files are ever fetched.
    """
    if source is None:  # from_pretrained(None, config=..., state_dict=...): nothing is read from disk
        return
    folder = Path(source) / subfolder
    if not folder.is_dir():
        return
    safe, pickled = WEIGHT_FILES[kind]
    found = [name for name in pickled if (folder / name).is_file()]
    if found and not any((folder / name).is_file() for name in safe):
        raise _refusal(str(source), f"{' and '.join(found)} (a pickle) but no {safe[0]}", kind)


def require_safetensors_adapter(source: str) -> None:
    """Raise unless the adapter at `source` (folder or Hub repo) has `adapter_model.safetensors`, before peft could
    fall back to `adapter_model.bin`."""
    refuse_pickled_weights(source, "adapter")
    from transformers.utils import cached_file

    found = cached_file(source, WEIGHT_FILES["adapter"][0][0], _raise_exceptions_for_missing_entries=False)
    if found is None:
        raise _refusal(source, "no adapter_model.safetensors", "adapter")


__all__ = ["PickledWeightsError", "refuse_pickled_weights", "require_safetensors_adapter"]
