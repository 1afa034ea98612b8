"""YAML presets of the recipes: keys are flag names, a preset may extend another, and tower keys follow their tower.

    base: easy_vqa.yaml        # the preset this one extends (relative to this file); its keys come first
    num_train_epochs: 4        # then this file's keys override them, and the command line overrides both

Keys that belong to a tower (`vision_model_args` and `image_size` to `vision_model`, `text_model_args` to
`text_model`) only make sense with that tower: when the command line names another tower, the preset's keys for the
old one are dropped, and the run says so.

Which preset a run starts from (`choose_preset`): the one `--config PATH` names; none for `--config ""` (or
`none`); else the recipe's demo preset, but only on its demo dataset (the preset's `dataset:` key), i.e. when
`--dataset` is not given or names that dataset. A run without a preset starts from its task's defaults for real data
(`Task.real_data_defaults`). Every run records its effective flags (`EffectiveFlags`: the starting point's keys, then
the command line's) in `<output_dir>/run_config.yaml`, which `--config` replays.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_write_text

logger = logging.getLogger("mmft")

BASE_KEY = "base"
DEMO_KEY = "dataset"  # a preset's demo dataset: the one it applies to when the recipe loads it by default
NO_PRESET = ("", "none")  # `--config ""` / `--config none`: no preset, the task's defaults for real data
RUN_CONFIG = "run_config.yaml"  # the effective flags of a run, in its output_dir
TOWER_KEYS = {"vision_model": ("vision_model_args", "image_size"), "text_model": ("text_model_args",)}


def load_preset(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The preset's keys with those of its `base` chain underneath, in order (base first)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    if path.resolve() in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path.resolve()))
        raise ValueError(f"{path}: presets extend each other in a loop ({chain})")
    try:
        preset = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:  # safe_load also refuses python/* tags: a preset cannot run code
        raise ValueError(f"{path}: not a valid YAML preset: {error}") from None
    if not isinstance(preset, dict):
        raise ValueError(f"{path}: expected a mapping of flag names to values, got {type(preset).__name__}")
    base = preset.pop(BASE_KEY, None)
    if base is None:
        return preset
    if not isinstance(base, str):
        raise ValueError(f"{path}: '{BASE_KEY}' must name another preset file, got {base!r}")
    return {**load_preset(path.parent / base, (*_seen, path.resolve())), **preset}


def given_flags(argv: list[str]) -> dict[str, str | None]:
    """{flag name: value} of a command line (`--name value` or `--name=value`; None for a bare switch)."""
    given: dict[str, str | None] = {}
    for index, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        name, equals, value = token[2:].partition("=")
        following = argv[index + 1] if index + 1 < len(argv) and not argv[index + 1].startswith("--") else None
        given[name.replace("-", "_")] = value if equals else following
    return given


def drop_other_towers_keys(preset: dict[str, Any], argv: list[str], source: str) -> dict[str, Any]:
    """The preset without the keys of a tower the command line replaces (each drop is logged)."""
    given = given_flags(argv)
    kept = dict(preset)
    for tower, keys in TOWER_KEYS.items():
        if tower not in given or tower not in preset or given[tower] == str(preset[tower]):
            continue
        dropped = {key: kept.pop(key) for key in keys if key in kept and key not in given}
        if dropped:
            logger.warning(
                "mmft: --%s on the command line replaces %s's %s %r, so its %s are dropped (they were for that "
                "tower); pass them on the command line to keep them",
                tower,
                source,
                tower,
                preset[tower],
                ", ".join(f"{k}={v!r}" for k, v in dropped.items()),
            )
    return kept


# Keys of a starting point that only make sense while the command line leaves other flags alone: model selection
# needs evaluations and checkpoints, so `--eval_strategy no` or `--save_strategy no` given by the user turns off a
# `load_best_model_at_end` that came from a preset or the task's defaults (transformers would refuse the mix).
FOLLOWING_KEYS = {"load_best_model_at_end": {"eval_strategy": "no", "save_strategy": "no"}}


def drop_keys_the_command_line_disables(start: dict[str, Any], argv: list[str], source: str) -> dict[str, Any]:
    """`start` (a preset's or the defaults' keys) without the `FOLLOWING_KEYS` the command line's flags turn off
    (each drop is logged); a key the command line gives itself stays."""
    given = given_flags(argv)
    kept = dict(start)
    for key, disabling in FOLLOWING_KEYS.items():
        if key not in kept or key in given:
            continue
        reasons = [f"--{flag} {value}" for flag, value in disabling.items() if given.get(flag) == value]
        if reasons:
            logger.warning(
                "mmft: %s on the command line turns off %s's %s=%r; pass --%s to keep it",
                " and ".join(reasons),
                source,
                key,
                kept.pop(key),
                key,
            )
    return kept


@dataclass(frozen=True)
class PresetChoice:
    """The starting point of a run's flags: a preset file, or (`path` None) none; `why` says which, for the log."""

    path: str | None
    why: str


def choose_preset(named: str | None, demo: str | None, dataset: str | None, task_default_dataset: str) -> PresetChoice:
    """The preset a run starts from: `named` (`--config`; "" or "none": no preset), else the recipe's `demo` preset
    when the run's `dataset` (`--dataset`; None: the task's default, `task_default_dataset`) is its demo dataset (its
    `dataset:` key, else the task's default), else none."""
    if named is not None:
        if named.strip().lower() in NO_PRESET:
            return PresetChoice(None, f"--config {named!r}")
        return PresetChoice(named, "named by --config")
    if demo is None:
        return PresetChoice(None, "no preset given")
    demo_dataset = str(load_preset(demo).get(DEMO_KEY) or task_default_dataset)
    if dataset is None or dataset == demo_dataset:
        return PresetChoice(demo, f"the {demo_dataset} demo")
    return PresetChoice(None, f"--dataset {dataset} is not the {demo_dataset} demo of {demo}")


def _plain(value: Any) -> Any:
    """A parsed flag value as YAML writes and `--config` reads it back (enums by their value, tuples as lists)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class EffectiveFlags:
    """A run's flags as given: `flags` holds the starting point's keys (a preset's, or the task's defaults for real
    data), then those of the command line over them; `source` says where they start, in one line."""

    source: str
    flags: dict[str, Any]

    def yaml(self) -> str:
        header = (
            f"# The effective flags of this run: {self.source};\n# then the command line's. "
            "Replay them with --config <this file> (flags given beside it override its keys).\n"
        )
        return header + yaml.safe_dump({key: _plain(value) for key, value in self.flags.items()}, sort_keys=False)

    def write(self, output_dir: str | Path) -> Path:
        """Write `run_config.yaml` into `output_dir` (whole or not at all); returns its path."""
        path = Path(output_dir) / RUN_CONFIG
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self.yaml())
        return path


__all__ = [
    "BASE_KEY",
    "DEMO_KEY",
    "NO_PRESET",
    "RUN_CONFIG",
    "TOWER_KEYS",
    "EffectiveFlags",
    "PresetChoice",
    "choose_preset",
    "drop_keys_the_command_line_disables",
    "drop_other_towers_keys",
    "given_flags",
    "load_preset",
]
