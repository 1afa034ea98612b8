"""Pick the checkpoint to resume from: the newest *complete* `checkpoint-N` of an output folder.

The HF Trainer writes a checkpoint in place: weights, optimizer, scheduler and RNG states first, `trainer_state.json`
last, and only then deletes older checkpoints (`save_total_limit`). A run killed while saving therefore leaves a
newest folder that lacks `trainer_state.json` or holds a truncated file, while the previous checkpoint is still whole.
`transformers.trainer_utils.get_last_checkpoint` goes by folder name and would pick the broken one; here every
candidate is checked (cheaply: headers and zip directories, no tensor is read) and the newest complete one wins.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path

from safetensors import safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

# `--resume_from_checkpoint` values that mean "the newest complete checkpoint in output_dir, if any".
LATEST = ("auto", "latest", "last", "true")
TRAINER_STATE = "trainer_state.json"
INCOMPLETE_PREFIX = "incomplete-"  # renamed broken checkpoints: no longer matched by `checkpoint-*` globs
_STEP = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def _safetensors_problem(path: Path) -> str | None:
    try:
        with safe_open(str(path), framework="pt") as handle:  # checks the header covers the whole file
            handle.keys()
    except Exception as error:  # safetensors raises its own error types for truncated or garbled files
        return f"{path.name} does not load ({error})"
    return None


def _torch_file_problem(path: Path) -> str | None:
    # torch.save writes a zip archive whose directory sits at the end: a truncated file has none.
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        return f"{path.name} is truncated or unreadable ({error})"
    return None


def _weights_problems(folder: Path) -> list[str]:
    single = [folder / name for name in ("model.safetensors", "adapter_model.safetensors") if (folder / name).is_file()]
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    sharded_dirs = [p for p in folder.glob("pytorch_model_fsdp_*") if p.is_dir()]  # FSDP SHARDED_STATE_DICT
    deepspeed_dirs = [p for p in folder.glob("global_step*") if p.is_dir()]  # DeepSpeed engine state (ZeRO-3 weights)
    if not (single or indexes or sharded_dirs or deepspeed_dirs):
        return ["no model weights (model.safetensors, adapter_model.safetensors, shard index, FSDP/DeepSpeed shards)"]
    problems = [problem for path in single if (problem := _safetensors_problem(path))]
    for index in indexes:
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as error:
            problems.append(f"{index.name} is not a valid shard index ({error})")
            continue
        for shard in shards:
            problem = _safetensors_problem(folder / shard) if (folder / shard).is_file() else f"missing shard {shard}"
            problems += [problem] if problem else []
    problems += [f"{p.name}/.metadata missing" for p in sharded_dirs if not (p / ".metadata").is_file()]
    return problems


def _rng_problems(folder: Path, world_size: int) -> list[str]:
    names = ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{rank}.pth" for rank in range(world_size)]
    present = [folder / name for name in names if (folder / name).is_file()]
    if not present and not list(folder.glob("rng_state*.pth")):
        return ["no RNG state (rng_state*.pth)"]
    if present and len(present) < len(names):  # saved by this world size, but some rank's file never arrived
        return [f"RNG state of {len(names) - len(present)} of {world_size} processes missing"]
    return [problem for path in present if (problem := _torch_file_problem(path))]


def checkpoint_problems(folder: str | Path, world_size: int = 1) -> list[str]:
    """Why `folder` cannot be resumed from exactly; an empty list means it is complete."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    try:
        state = json.loads((folder / TRAINER_STATE).read_text())
    except FileNotFoundError:
        return [f"no {TRAINER_STATE} (the save did not finish)"]
    except ValueError as error:
        return [f"{TRAINER_STATE} is truncated or invalid ({error})"]
    problems = []
    match = _STEP.match(folder.name)
    if match and state.get("global_step") != int(match.group(1)):
        problems.append(f"{TRAINER_STATE} says global_step={state.get('global_step')}, folder says {match.group(1)}")
    problems += _weights_problems(folder)
    for name in ("optimizer.pt", "scheduler.pt"):  # absent with --save_only_model: then there is nothing to check
        if (folder / name).is_file() and (problem := _torch_file_problem(folder / name)):
            problems.append(problem)
    if (folder / "optimizer.pt").is_file():  # a full checkpoint also carries RNG states
        problems += _rng_problems(folder, world_size)
    return problems


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """`checkpoint-N` folders of `output_dir`, newest (highest N) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return [path for _, path in sorted(found, reverse=True)]


def latest_complete_checkpoint(output_dir: str | Path, world_size: int = 1) -> tuple[Path | None, dict[Path, list]]:
    """The newest complete checkpoint (or None) and the problems of every newer, incomplete one."""
    skipped: dict[Path, list[str]] = {}
    for folder in list_checkpoints(output_dir):
        problems = checkpoint_problems(folder, world_size)
        if not problems:
            return folder, skipped
        skipped[folder] = problems
    return None, skipped


def set_aside(folder: Path) -> Path:
    """Rename an incomplete checkpoint so that no resume or rotation picks it up, and no new save writes into it."""
    target = folder.with_name(INCOMPLETE_PREFIX + folder.name)
    suffix = 1
    while target.exists():
        target = folder.with_name(f"{INCOMPLETE_PREFIX}{folder.name}.{suffix}")
        suffix += 1
    folder.rename(target)
    return target


def resolve_resume_checkpoint(
    value: str | None, output_dir: str | Path, world_size: int = 1, is_main_process: bool = True
) -> str | None:
    """
    Turn `--resume_from_checkpoint` into a folder for `Trainer.train`, or None to start from scratch.

    `auto` / `latest` (also `last`, `true`): the newest complete checkpoint of `output_dir`, or a fresh start when there
    is none, so the same command can be rerun after every preemption. Newer incomplete checkpoints are renamed
    `incomplete-checkpoint-N` by the main process. A folder path must be complete, else a `ValueError` says what is
    wrong and which checkpoint would work.
    """
    if value is None or value == "" or value.lower() in ("none", "false"):
        return None
    if value.lower() in LATEST:
        chosen, skipped = latest_complete_checkpoint(output_dir, world_size)
        for folder, problems in skipped.items():
            message = "skipping incomplete checkpoint %s (%s)"
            if is_main_process:
                message += "; renamed to %s" % set_aside(folder).name
            logger.warning(message, folder, "; ".join(problems))
        if chosen is None:
            logger.warning("--resume_from_checkpoint %s: no complete checkpoint in %s; starting from scratch", value,
                           output_dir)  # fmt: skip
            return None
        logger.warning("resuming from %s", chosen)
        return str(chosen)
    problems = checkpoint_problems(value, world_size)
    if problems:
        fallback, _ = latest_complete_checkpoint(Path(value).parent, world_size)
        hint = f"the newest complete checkpoint beside it is {fallback}" if fallback else "no complete one is beside it"
        raise ValueError(
            f"--resume_from_checkpoint {value} cannot be resumed from: {'; '.join(problems)}. {hint}; "
            f"pass that folder, or `--resume_from_checkpoint auto` to pick the newest complete checkpoint"
        )
    return value


__all__ = ["checkpoint_problems", "latest_complete_checkpoint", "list_checkpoints", "resolve_resume_checkpoint"]
