"""The task registry: `TASKS[name]` is a `Task` class (see `mmft.tasks.base`), added by `register_task`.

A task is one package, `mmft/tasks/<name>/`: its task (`task.py`), model class (`modeling.py`), pipeline
(`pipeline.py`), processor if it has one, evaluation and the data readers only it uses. Registering it is all it takes
for the rest of mmft to serve it, everything below is read from the registry: its model loads through its Auto class
and its pipeline through `pipeline(task.pipeline_task, ...)` (both registered here), its public classes are
`mmft.<Name>`, `mmft predict` (and `explain`, `search` or a verb of its own, where the task lists them in
`Task.commands`) accepts its models with its pipeline's flags, `mmft demo` serves them the page `Task.demo` names
(`<package>.demo`, imported by `mmft demo` alone), its model card says what `Task.card` says, the model contract tests
cover its head, and `recipes/<name>.py` is `mmft.training.main(name, ...)`.

Built-in tasks are registered below, one line each, by package: the package's `__init__` is its model side only
(`model_class`, with the Auto class and pipeline it declares, and its public `__all__`), so `import mmft` loads no
training stack; its `Task` class (`task_class`, in `<package>.task`) loads on first read of `TASKS[name]`. A user's
task calls `register_task(MyTask)` (or decorates the class) in its own module, or `register_task("my_pkg.my_task")`
for a package laid out as the built-in ones.

This module stays light: it imports neither `mmft.tasks.base` nor any task's `task.py` until one is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import CardInfo, Task, TaskData

_BASE_NAMES = ("CardInfo", "Task", "TaskData")
_DECLARED = ("name", "model_class", "auto_class", "pipeline_task", "pipeline_class", "card")


class TaskRegistry(MutableMapping):
    """name -> `Task` class. A task registered by package keeps its package (its model side) and loads its `Task`
    class on first read; `packages()` and `model_class()` read the model side without loading any `Task` class."""

    def __init__(self) -> None:
        self._tasks: dict[str, type[Task] | None] = {}  # None: a package's task, not loaded yet
        self._packages: dict[str, ModuleType] = {}

    def __getitem__(self, name: str) -> type[Task]:
        task = self._tasks[name]
        if task is None:
            task = self._tasks[name] = _task_of_package(name, self._packages[name])
        return task

    def __setitem__(self, name: str, task: type[Task]) -> None:
        self._tasks[name] = task
        self._packages.pop(name, None)

    def __delitem__(self, name: str) -> None:
        del self._tasks[name]
        self._packages.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"TaskRegistry({sorted(self._tasks)})"

    def add_package(self, name: str, package: ModuleType) -> None:
        self._tasks[name] = None
        self._packages[name] = package

    def packages(self) -> list[ModuleType]:
        """The registered task packages (their model side), in registration order."""
        return list(self._packages.values())

    def model_class(self, name: str) -> type:
        """The head of task `name`, without loading its `Task` class when it was registered by package."""
        task = self._tasks[name]
        return self._packages[name].model_class if task is None else task.model_class


TASKS = TaskRegistry()


def _task_of_package(name: str, package: ModuleType) -> type[Task]:
    task = getattr(importlib.import_module(f"{package.__name__}.task"), package.task_class)
    if task.name != name:
        raise TypeError(f"{package.__name__} is registered as {name!r} but its task is named {task.name!r}")
    return task


def _register_package(path: str) -> str:
    package = importlib.import_module(path)
    missing = [attr for attr in ("model_class", "task_class") if not hasattr(package, attr)]
    if missing:
        raise TypeError(f"task package {path} does not set {', '.join(missing)} (see mmft.tasks)")
    from ..auto import register_head

    name = path.rsplit(".", 1)[-1]
    TASKS.add_package(name, package)
    register_head(package.model_class)
    return name


def register_task(task: type[Task] | str) -> Any:
    """Add `task` to `TASKS` and register its model class with its Auto class (for `MMFTConfig`) and its pipeline
    class under `task.pipeline_task`; returns `task`, so it also serves as a class decorator.

    `task` is a `Task` subclass, or the dotted path of a task package (`"mmft.tasks.vqa"`): a package whose
    `__init__` sets `model_class` (its head) and `task_class` (the name of its `Task` class in `<package>.task`),
    registered under the package's own name with only its model side imported. Registering a name again replaces
    the earlier task (a reloaded module, a test)."""
    if isinstance(task, str):
        _register_package(task)
        return task
    from ..auto import register_head

    missing = [name for name in _DECLARED if not hasattr(task, name)]
    if missing:
        raise TypeError(f"task {task.__name__} does not set {', '.join(missing)} (see mmft.tasks.base.Task)")
    TASKS[task.name] = task
    register_head(task.model_class, task.auto_class, task.pipeline_task, task.pipeline_class)
    return task


# The built-in tasks, one line each.
register_task("mmft.tasks.vqa")
register_task("mmft.tasks.classification")
register_task("mmft.tasks.retrieval")
register_task("mmft.tasks.captioning")
register_task("mmft.tasks.generative_vqa")


def exported(name: str) -> Any:
    """The public object `name` of a registered task package (`mmft.<name>`); AttributeError if none has it."""
    for package in TASKS.packages():
        if name in getattr(package, "__all__", ()):
            return getattr(package, name)
    raise AttributeError(name)


def exported_names() -> list[str]:
    """Every public name of the registered task packages (their `__all__`)."""
    return [name for package in TASKS.packages() for name in getattr(package, "__all__", ())]


def get_task(task: str | type[Task]) -> type[Task]:
    """A task class by name (or the class itself), with an error listing the known names."""
    if isinstance(task, type):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[task]


def task_for_model(model_or_config) -> type[Task]:
    """The task of a model (by its class), or of a saved config (by the class it names in `architectures`); only
    that task's `Task` class is loaded."""
    if hasattr(model_or_config, "config"):
        from ..unwrap import task_model

        names = {type(task_model(model_or_config)).__name__}
    else:
        names = set(getattr(model_or_config, "architectures", None) or [])
    for name in TASKS:
        if TASKS.model_class(name).__name__ in names:
            return TASKS[name]
    known = ", ".join(TASKS.model_class(name).__name__ for name in TASKS)
    if not names:  # a model class's save_pretrained always records it
        raise ValueError(f"the config names no model class (its `architectures` is empty); known: {known}")
    raise ValueError(f"no mmft task has the model class {sorted(names)}; known: {known}")


def __getattr__(name: str):
    """`Task`, `TaskData` and `CardInfo` (mmft.tasks.base, which imports the data stack) on first use."""
    if name in _BASE_NAMES:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module 'mmft.tasks' has no attribute {name!r}")


__all__ = [
    "CardInfo",
    "TASKS",
    "Task",
    "TaskData",
    "TaskRegistry",
    "exported",
    "exported_names",
    "get_task",
    "register_task",
    "task_for_model",
]
