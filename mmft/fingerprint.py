"""The run fingerprint: what makes a checkpoint (and a rejects ledger) belong to one run, checked before resuming.

A fingerprint is plain JSON, task-generic: the task, the dataset's identity (the data flags, and the split sizes once
loaded), every flag that shapes the model (tower, bridge, LoRA plan and task flags), the label set in id order (any
head's `config.id2label`) and the model config. Each checkpoint carries it (`mmft_run.json`, written before the
Trainer's own files), with the number of processes that wrote it. Resuming a checkpoint whose fingerprint differs
from this run's is refused, naming what differs: resuming it would train another run's weights, optimizer and
label order on this run's data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

logger = logging.getLogger(__name__)

RUN_FILE = "mmft_run.json"
# Flags that change neither the model nor the data it sees: a resume may change them freely.
FREE_FLAGS = {
    "eval_only",
    "cache_frozen_text",
    "frozen_text_cache_mb",
    "save_merged",
    "on_bad_example",
    "max_bad_fraction",
}
# Config fields that record where or how a config was written, not what the model is.
VOLATILE_CONFIG_KEYS = {
    "transformers_version",
    "_name_or_path",
    "_commit_hash",
    "architectures",
    "dtype",
    "torch_dtype",
    "id2label",
    "label2id",
}
SHOWN_DIFFERENCES = 8


class RunMismatchError(ValueError):
    """The checkpoint to resume was written by a run with another fingerprint."""


def _flags(group: Any) -> dict[str, Any]:
    if group is None or not dataclasses.is_dataclass(group):
        return {}
    return {f.name: getattr(group, f.name) for f in dataclasses.fields(group) if f.name not in FREE_FLAGS}


def _dataset_name(name: str | None) -> str | None:
    """A local dataset by its absolute path (the same folder named two ways is the same data)."""
    return os.path.abspath(name) if name and os.path.exists(name) else name


def arguments_fingerprint(task_name: str, args: Any) -> dict[str, Any]:
    """The part of the fingerprint known from the flags alone (before any data is read): ties the rejects ledger."""
    data = _flags(args.data)
    data["dataset"] = _dataset_name(data.get("dataset"))
    model = _flags(args.model)
    for key in ("vision_model", "text_model", "model_name_or_path"):
        model[key] = _dataset_name(model.get(key))
    return {
        "task": task_name,
        "dataset": data,
        "model_flags": model,
        "plan": _flags(args.lora),
        "task_flags": _flags(args.task),
    }


def _plain(value: Any) -> Any:
    """JSON-able, key-sorted copy (config dicts hold tuples, ints as dict keys, nested configs)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def run_fingerprint(arguments: dict[str, Any], config, split_sizes: dict[str, int | str]) -> dict[str, Any]:
    """The whole fingerprint: `arguments_fingerprint` plus the split sizes, the label set and the model config."""
    id2label = getattr(config, "id2label", None) or {}
    labels = [id2label[i] for i in sorted(id2label)]
    model_config = {k: v for k, v in config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
    for tower in ("vision_config", "text_config"):
        if isinstance(model_config.get(tower), dict):
            model_config[tower] = {k: v for k, v in model_config[tower].items() if k not in VOLATILE_CONFIG_KEYS}
    fingerprint = {**arguments, "labels": labels, "model_config": model_config}
    fingerprint["dataset"] = {**arguments["dataset"], "split_sizes": dict(split_sizes)}
    return _plain(fingerprint)


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    """A short digest of a fingerprint (what rejects ledger lines are tagged with)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _label_difference(stored: list, current: list) -> str:
    if len(stored) != len(current):
        return f"labels: {len(stored)} in the checkpoint, {len(current)} now (the head has another size)"
    moved = [i for i, (a, b) in enumerate(zip(stored, current)) if a != b]
    examples = ", ".join(f"id {i}: {stored[i]!r} then, {current[i]!r} now" for i in moved[:3])
    return f"labels: {len(moved)} of {len(stored)} label ids mean another label ({examples})"


def differences(stored: Any, current: Any, path: str = "") -> list[str]:
    """What differs between two fingerprints, one readable line per differing field (nested fields by dotted path)."""
    if path == "labels" and stored != current:
        return [_label_difference(stored, current)]
    if isinstance(stored, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(stored) | set(current), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in stored or key not in current:
                found.append(
                    f"{where}: {'absent' if key not in stored else repr(stored[key])} in the checkpoint, "
                    f"{'absent' if key not in current else repr(current[key])} now"
                )
            else:
                found += differences(stored[key], current[key], where)
        return found
    return [] if stored == current else [f"{path}: {stored!r} in the checkpoint, {current!r} now"]


def write_run_file(folder: str | Path, fingerprint: dict[str, Any], world_size: int) -> None:
    """Store the fingerprint and the number of writing processes in a checkpoint folder (whole or not at all)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / RUN_FILE, json.dumps({"fingerprint": fingerprint, "world_size": world_size}, indent=1))


def read_run_file(folder: str | Path) -> dict[str, Any] | None:
    """The run file of a checkpoint, or None when it has none (written before mmft stored fingerprints)."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None


def check_same_run(checkpoint: str | Path, fingerprint: dict[str, Any]) -> None:
    """Raise `RunMismatchError` when `checkpoint` was written by a run with another fingerprint."""
    stored = read_run_file(checkpoint)
    if stored is None:
        logger.warning(
            "%s has no %s (written before mmft stored run fingerprints): cannot check that it belongs to this run",
            checkpoint,
            RUN_FILE,
        )
        return
    found = differences(stored["fingerprint"], fingerprint)
    if found:
        shown = "; ".join(found[:SHOWN_DIFFERENCES]) + (
            f"; and {len(found) - SHOWN_DIFFERENCES} more" if len(found) > SHOWN_DIFFERENCES else ""
        )
        raise RunMismatchError(
            f"{checkpoint} belongs to another run, so it cannot be resumed by this one. What differs: {shown}. "
            f"Give this run another --output_dir, or pass --overwrite_output_dir true to delete the checkpoints in "
            f"{Path(checkpoint).parent} and start afresh"
        )


__all__ = [
    "RUN_FILE",
    "RunMismatchError",
    "arguments_fingerprint",
    "check_same_run",
    "differences",
    "fingerprint_id",
    "read_run_file",
    "run_fingerprint",
    "write_run_file",
]
