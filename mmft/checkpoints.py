"""Pick the checkpoint to resume from: the newest *complete* `checkpoint-N` of an output folder.

The HF Trainer writes a checkpoint in place: weights, optimizer, scheduler and RNG states first, `trainer_state.json`
last, and only then deletes older checkpoints (`save_total_limit`). A run killed while saving therefore leaves a
newest folder that lacks `trainer_state.json` or holds a truncated file, while the previous checkpoint is still whole.
`transformers.trainer_utils.get_last_checkpoint` goes by folder name and would pick the broken one; here every
candidate is checked (cheaply: headers and zip directories, no tensor is read) and the newest complete one wins.
A checkpoint is complete when it holds the RNG states of every process that *wrote* it (its `mmft_run.json` says
how many), whatever the number of processes resuming it. `choose_checkpoint` is the training path's entry: it also
applies `--overwrite_output_dir` and starts or tidies the rejects ledger.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from pathlib import Path

from safetensors import safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .fingerprint import read_run_file

logger = logging.getLogger(__name__)

# `--resume_from_checkpoint` values that mean "the newest complete checkpoint in output_dir, if any".
LATEST = ("auto", "latest", "last", "true")
TRAINER_STATE = "trainer_state.json"
INCOMPLETE_PREFIX = "incomplete-"  # renamed broken checkpoints: no longer matched by `checkpoint-*` globs
_STEP = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_RNG_RANK = re.compile(r"^rng_state_(\d+)\.pth$")


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


def rng_files(world_size: int) -> list[str]:
    """The RNG state files the HF Trainer writes with `world_size` processes, in rank order."""
    return ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{rank}.pth" for rank in range(world_size)]


def _written_rng_files(folder: Path) -> list[str] | None:
    """The RNG files the processes that wrote `folder` saved: by its run file, else guessed from the files there."""
    try:
        run = read_run_file(folder)
    except ValueError:
        run = None  # reported by checkpoint_problems
    if run and run.get("world_size"):
        return rng_files(int(run["world_size"]))
    ranks = [int(m.group(1)) for p in folder.glob("rng_state_*.pth") if (m := _RNG_RANK.match(p.name))]
    if ranks:
        return [f"rng_state_{rank}.pth" for rank in range(max(ranks) + 1)]
    return ["rng_state.pth"] if (folder / "rng_state.pth").is_file() else None


def saved_world_size(folder: str | Path) -> int | None:
    """How many processes wrote `folder` (None when it holds no RNG state and no run file says)."""
    names = _written_rng_files(Path(folder))
    return len(names) if names else None


def _rng_problems(folder: Path) -> list[str]:
    names = _written_rng_files(folder)
    if names is None:
        return ["no RNG state (rng_state*.pth)"]
    present = [folder / name for name in names if (folder / name).is_file()]
    if len(present) < len(names):  # some process's file never arrived
        return [f"RNG state of {len(names) - len(present)} of the {len(names)} processes that wrote it missing"]
    return [problem for path in present if (problem := _torch_file_problem(path))]


def _run_file_problem(folder: Path) -> list[str]:
    try:
        read_run_file(folder)
    except ValueError as error:
        return [str(error)]
    return []


def checkpoint_problems(folder: str | Path) -> list[str]:
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
    problems += _weights_problems(folder) + _run_file_problem(folder)
    for name in ("optimizer.pt", "scheduler.pt"):  # absent with --save_only_model: then there is nothing to check
        if (folder / name).is_file() and (problem := _torch_file_problem(folder / name)):
            problems.append(problem)
    if (folder / "optimizer.pt").is_file():  # a full checkpoint also carries RNG states
        problems += _rng_problems(folder)
    return problems


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """`checkpoint-N` folders of `output_dir`, newest (highest N) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return [path for _, path in sorted(found, reverse=True)]


def latest_complete_checkpoint(output_dir: str | Path) -> tuple[Path | None, dict[Path, list]]:
    """The newest complete checkpoint (or None) and the problems of every newer, incomplete one."""
    skipped: dict[Path, list[str]] = {}
    for folder in list_checkpoints(output_dir):
        problems = checkpoint_problems(folder)
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


def resolve_resume_checkpoint(value: str | None, output_dir: str | Path, is_main_process: bool = True) -> str | None:
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
        chosen, skipped = latest_complete_checkpoint(output_dir)
        for folder, problems in skipped.items():
            message = "skipping incomplete checkpoint %s (%s)"
            if is_main_process:
                message += f"; renamed to {set_aside(folder).name}"
            logger.warning(message, folder, "; ".join(problems))
        if chosen is None:
            logger.warning(
                "--resume_from_checkpoint %s: no complete checkpoint in %s; starting from scratch", value, output_dir
            )
            return None
        logger.warning("resuming from %s", chosen)
        return str(chosen)
    problems = checkpoint_problems(value)
    if problems:
        fallback, _ = latest_complete_checkpoint(Path(value).parent)
        hint = f"the newest complete checkpoint beside it is {fallback}" if fallback else "no complete one is beside it"
        raise ValueError(
            f"--resume_from_checkpoint {value} cannot be resumed from: {'; '.join(problems)}. {hint}; "
            f"pass that folder, or `--resume_from_checkpoint auto` to pick the newest complete checkpoint"
        )
    logger.warning("resuming from %s", value)  # as `auto` says it: a run that restarted instead would be told apart
    return value


def remove_checkpoints(output_dir: str | Path) -> list[Path]:
    """Delete every checkpoint (and set-aside incomplete one) of `output_dir`: `--overwrite_output_dir`."""
    output_dir = Path(output_dir)
    doomed = list_checkpoints(output_dir) + sorted(output_dir.glob(f"{INCOMPLETE_PREFIX}*"))
    for folder in doomed:
        shutil.rmtree(folder)
    return doomed


def choose_checkpoint(training_args, value: str | None, overwrite: bool, policy) -> str | None:
    """The checkpoint `value` (`--resume_from_checkpoint`) names: a folder, or `auto`, the newest complete one; or None.

    `--overwrite_output_dir` first deletes the checkpoints already there. A fresh start begins a new rejects ledger;
    a resume keeps only its own run's lines (`policy`: the run's `BadExamplePolicy`). The main process does this
    before the others look.
    """
    main = training_args.process_index == 0
    with training_args.main_process_first(desc="choosing the checkpoint to resume from"):
        if main and overwrite:
            remove_checkpoints(training_args.output_dir)
        resume = resolve_resume_checkpoint(value, training_args.output_dir, main)
        if main and resume:
            policy.keep_own_lines()
        elif main:
            policy.reset()
    return resume


__all__ = [
    "checkpoint_problems",
    "choose_checkpoint",
    "latest_complete_checkpoint",
    "list_checkpoints",
    "remove_checkpoints",
    "resolve_resume_checkpoint",
    "rng_files",
    "saved_world_size",
]
