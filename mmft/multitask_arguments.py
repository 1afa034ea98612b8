"""How a multi-task run is described: a preset of shared flags plus a `tasks:` mapping, and the command line over it.

A task's entry holds that task's own flags (its data, its task flags, its batch size: any flag of its recipe, over
the shared ones) and three weights of the joint run: `loss_weight` (its loss is multiplied by it), `sampling_weight`
(its share of the steps is multiplied by it; see `mmft.multitask.sampling`) and `selection_weight` (its main metric's
weight in the joint score that model selection reads). The multi-task flags (`MultiTaskArguments`) sit at the top
level. On the command line, `--flag value` overrides a shared flag for every task and `--<task>.<flag> value` one
task's flag. `parse_multitask_args` parses each task's flags with that task's own recipe parser
(`mmft.arguments.parse_recipe_args`), so every check a single-task recipe makes is made here too.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, Trainer

from .arguments import RecipeArguments, argument_classes, command_line_flags, flags_argv, parse_recipe_args
from .data import BadExamplePolicy
from .presets import load_preset
from .tasks import Task, TaskData, get_task

TASKS_KEY = "tasks"
DEFAULT_PRESET = Path(__file__).resolve().parent.parent / "recipes" / "configs" / "multitask_easy_vqa_scenes.yaml"


@dataclass
class MultiTaskArguments:
    """Flags of the joint run itself (the top level of a multi-task preset)."""

    task_sampling: str = field(
        default="temperature",
        metadata={"help": "which task each optimizer step trains on: proportional, temperature or round_robin"},
    )
    task_temperature: float = field(
        default=2.0, metadata={"help": "T of --task_sampling temperature: shares proportional to rows^(1/T)"}
    )
    mix_within_step: bool = field(
        default=False,
        metadata={"help": "draw a task per micro-batch (gradient accumulation then sums several tasks' losses)"},
    )


@dataclass(frozen=True)
class TaskWeights:
    """A task's weights in the joint run (its preset entry's `loss_weight`, `sampling_weight`, `selection_weight`)."""

    loss: float = 1.0
    sampling: float = 1.0
    selection: float = 1.0


WEIGHT_KEYS = {"loss_weight": "loss", "sampling_weight": "sampling", "selection_weight": "selection"}


@dataclass
class TaskPart:
    """One task of a joint run: its `Task`, parsed flags, weights, and (once prepared) data, processor and policy."""

    name: str
    task: Task
    args: RecipeArguments
    weights: TaskWeights
    data: TaskData | None = None
    processor: Any = None
    policy: BadExamplePolicy | None = None
    trainer: Trainer | None = None  # its own Trainer for evaluation on the shared weights (`evaluation_trainer`)


@dataclass
class MultiTaskRun:
    """What `parse_multitask_args` read: the joint run's flags, the shared flags (the first task's parse) and the
    tasks in preset order; `flags` are the effective preset keys (written to `run_config.yaml`)."""

    multitask: MultiTaskArguments
    shared: RecipeArguments
    parts: list[TaskPart]
    flags: dict[str, Any]


# -- parsing ---------------------------------------------------------------------------------------------------------
def _split_command_line(argv: list[str]) -> tuple[str | None, dict[str, list[str]], list[str]]:
    """(`--config` value, `--<task>.<flag>` tokens per task, the other tokens)."""
    config, per_task, rest = None, {}, []
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        name, equals, value = token.partition("=")
        if name == "--config":
            config = value if equals else (tokens.pop(0) if tokens else "")
            continue
        if token.startswith("--") and "." in name:
            task, flag = name[2:].split(".", 1)
            values = [value] if equals else []
            while not equals and tokens and not tokens[0].startswith("--"):
                values.append(tokens.pop(0))
            per_task.setdefault(task, []).extend([f"--{flag}", *values])
            continue
        rest.append(token)
    return config, per_task, rest


def _weights(entry: dict[str, Any], where: str) -> TaskWeights:
    values = {}
    for key, name in WEIGHT_KEYS.items():
        if key in entry:
            value = entry.pop(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{where}: {key} must be a number >= 0, got {value!r}")
            values[name] = float(value)
    return TaskWeights(**values)


def parse_multitask_args(argv: list[str], default_config: str | os.PathLike | None = DEFAULT_PRESET) -> MultiTaskRun:
    """Read a multi-task run's preset and command line (see the module docstring); ValueError with the file and key
    for a preset that does not fit."""
    config, per_task, rest = _split_command_line(argv)
    path = Path(config) if config else (Path(default_config) if default_config else None)
    if path is None:
        raise ValueError("a multi-task run needs a preset with a `tasks:` mapping: --config PATH")
    preset = load_preset(path)
    entries = preset.pop(TASKS_KEY, None)
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{path}: `{TASKS_KEY}:` must map each task name to its flags (e.g. `vqa: {{dataset: ...}}`)")
    unknown = sorted(set(per_task) - set(entries))
    if unknown:
        raise ValueError(f"--{unknown[0]}.<flag>: {unknown[0]!r} is not a task of {path} ({', '.join(entries)})")
    own = {f.name for f in fields(MultiTaskArguments)}
    multitask_keys = {key: preset.pop(key) for key in list(preset) if key in own}
    multitask, rest = HfArgumentParser(MultiTaskArguments).parse_args_into_dataclasses(
        args=flags_tokens(multitask_keys) + rest, return_remaining_strings=True, look_for_args_file=False
    )
    parts, effective = [], {}
    for name, entry in entries.items():
        where = f"{path}: {TASKS_KEY}.{name}"
        if entry is not None and not isinstance(entry, dict):
            raise ValueError(f"{where} must be a mapping of that task's flags, got {entry!r}")
        try:
            get_task(name)
        except ValueError as error:  # an unknown task name: the registered ones are listed
            raise ValueError(f"{where}: {error}") from None
        entry = dict(entry or {})
        own_tokens, given = _pop_weight_tokens(per_task.get(name, []), name)
        _weights(dict(given), f"--{name}.<weight>")  # a bad command-line weight is named as the command line gave it
        weights_given = {key: entry.pop(key) for key in WEIGHT_KEYS if key in entry}
        effective[name] = {**entry, **weights_given, **given}
        weights = _weights({**weights_given, **given}, where)
        task_argv = flags_argv({**preset, **entry}, where, name) + rest + own_tokens
        args = parse_recipe_args(task_argv, name)
        parts.append(TaskPart(name, get_task(name)(args.task), args, weights))
        own = command_line_flags(own_tokens, argument_classes(get_task(name).arguments_class))
        effective[name].update(own)
    if multitask.task_sampling == "round_robin" and any(p.weights.sampling != 1.0 for p in parts):
        raise ValueError(f"{path}: sampling_weight does not apply to --task_sampling round_robin (tasks take turns)")
    # The shared flags alone (no task's entry): the joint Trainer's arguments, a separate object from every task's
    # (each task's output_dir and evaluation settings are its own, see `prepare_part` and `evaluation_trainer`).
    first = parts[0].name
    shared = parse_recipe_args(flags_argv(preset, str(path), first) + rest, first)
    shared_cli = command_line_flags(rest, argument_classes(get_task(first).arguments_class))
    # The effective flags, command line included, so that `--config run_config.yaml` replays the run.
    flags = {**asdict(multitask), **preset, **shared_cli, TASKS_KEY: effective}
    return MultiTaskRun(multitask, shared, parts, flags)


def _pop_weight_tokens(tokens: list[str], task: str) -> tuple[list[str], dict[str, Any]]:
    """A task's `--<task>.<flag>` tokens without its weights (`--vqa.loss_weight 0`), and those weights (YAML-read
    values, so they are checked as a preset's are)."""
    rest, weights = [], {}
    tokens = list(tokens)
    while tokens:
        token = tokens.pop(0)
        key = token[2:] if token.startswith("--") else None
        if key in WEIGHT_KEYS:
            value = tokens.pop(0) if tokens and not tokens[0].startswith("--") else ""
            weights[key] = yaml.safe_load(value) if value else None
            continue
        rest.append(token)
    return rest, weights


def flags_tokens(flags: dict[str, Any]) -> list[str]:
    """`{"task_sampling": "temperature"}` -> `["--task_sampling", "temperature"]`."""
    return [token for key, value in flags.items() for token in (f"--{key}", str(value))]
