"""YAML presets of the recipes: keys are flag names, a preset may extend another, and tower keys follow their tower.

    base: easy_vqa.yaml        # the preset this one extends (relative to this file); its keys come first
    num_train_epochs: 4        # then this file's keys override them, and the command line overrides both

Keys that belong to a tower (`vision_model_args` and `image_size` to `vision_model`, `text_model_args` to
`text_model`) only make sense with that tower: when the command line names another tower, the preset's keys for the
old one are dropped, and the run says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger("mmft")

BASE_KEY = "base"
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


__all__ = ["BASE_KEY", "TOWER_KEYS", "drop_other_towers_keys", "given_flags", "load_preset"]
