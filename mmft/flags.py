"""Flag values shared by the recipes' argument groups (`mmft.arguments`) and the tasks' own argument classes."""

from __future__ import annotations

import json
from typing import Any


def json_flag(name: str, value: str | None) -> dict[str, Any] | None:
    """A `--name` flag holding a JSON object, as a dict (None when unset); a clear ValueError otherwise."""
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"--{name} is not valid JSON: {error.msg}: {value!r}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"--{name} must be a JSON object of name: value pairs, got {value!r}")
    return parsed


__all__ = ["json_flag"]
