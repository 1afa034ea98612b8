"""The task registry: `TASKS[name]` is a `Task` class (see `mmft.tasks.base`); one line per task."""

from __future__ import annotations

from .base import CardInfo, Task, TaskData
from .captioning import CaptioningTask
from .classification import ClassificationTask
from .retrieval import RetrievalTask
from .vqa import VQATask

TASKS: dict[str, type[Task]] = {
    "vqa": VQATask,
    "classification": ClassificationTask,
    "retrieval": RetrievalTask,
    "captioning": CaptioningTask,
}


def get_task(task: str | type[Task]) -> type[Task]:
    """A task class by name (or the class itself), with an error listing the known names."""
    if isinstance(task, type) and issubclass(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[task]


def task_for_model(model_or_config) -> type[Task]:
    """The task of a model (by its class), or of a saved config (by the class it names in `architectures`; VQA for
    folders saved before other tasks existed)."""
    if hasattr(model_or_config, "config"):
        from ..lora import task_model

        names = {type(task_model(model_or_config)).__name__}
    else:
        names = set(getattr(model_or_config, "architectures", None) or [])
    for task in TASKS.values():
        if task.model_class.__name__ in names:
            return task
    if names:
        known = ", ".join(t.model_class.__name__ for t in TASKS.values())
        raise ValueError(f"no mmft task has the model class {sorted(names)}; known: {known}")
    return TASKS["vqa"]


__all__ = ["CardInfo", "TASKS", "Task", "TaskData", "get_task", "task_for_model"]
