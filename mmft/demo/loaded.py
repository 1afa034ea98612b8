"""What the demo's parts share: a model loaded once for its page, and the error that says why there is no page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL = 'pip install "mmft[demo]"'


class DemoError(Exception):
    """Why there is no page to show, in one sentence (`mmft demo` prints it and exits with status 2)."""


@dataclass
class LoadedModel:
    """What a task's page builder (the function `Task.demo` names) gets: the model, loaded once, and its pipeline."""

    path: str  # the folder or Hub repo id it was loaded from
    model: Any  # the pipeline's model (on `device`, in eval mode)
    processor: Any
    task: type  # the `mmft.tasks.Task` class
    pipeline: Any  # the task's transformers pipeline over `model` and `processor`
    device: str
    workdir: Path  # scratch folder for the files a page writes (heat maps, uploaded galleries); removed at exit


__all__ = ["INSTALL", "DemoError", "LoadedModel"]
