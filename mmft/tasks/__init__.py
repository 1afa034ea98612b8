"""The task registry: `TASKS[name]` is a `Task` class (see `mmft.tasks.base`), added by `register_task`.

Registering a task is all it takes for the rest of mmft to serve it: its model loads through its Auto class, its
pipeline through `pipeline(task.pipeline_task, ...)`, `mmft predict` (and `explain` / `search`, where the task lists
them in `Task.commands`) accept its models, its model card says what `Task.card` says, and `recipes/<name>.py` is
`mmft.training.main(name, ...)`. Built-in tasks are registered below, one line each; a user's task calls
`register_task(MyTask)` (or decorates the class) in its own module.
"""

from __future__ import annotations

from .base import CardInfo, Task, TaskData
from .captioning.task import CaptioningTask
from .classification.task import ClassificationTask
from .retrieval.task import RetrievalTask
from .vqa.task import VQATask

TASKS: dict[str, type[Task]] = {}


def register_task(task: type[Task]) -> type[Task]:
    """Add `task` to `TASKS` under `task.name` and register its model class with its Auto class (for `MMFTConfig`)
    and its pipeline class under `task.pipeline_task`; returns the task, so it also serves as a class decorator.
    Registering a name again replaces the earlier task (a reloaded module, a test)."""
    from ..auto import register_head

    missing = [
        name
        for name in ("name", "model_class", "auto_class", "pipeline_task", "pipeline_class", "card")
        if not hasattr(task, name)
    ]
    if missing:
        raise TypeError(f"task {task.__name__} does not set {', '.join(missing)} (see mmft.tasks.base.Task)")
    TASKS[task.name] = task
    register_head(task.model_class, task.auto_class, task.pipeline_task, task.pipeline_class)
    return task


register_task(VQATask)
register_task(ClassificationTask)
register_task(RetrievalTask)
register_task(CaptioningTask)


def get_task(task: str | type[Task]) -> type[Task]:
    """A task class by name (or the class itself), with an error listing the known names."""
    if isinstance(task, type) and issubclass(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[task]


def task_for_model(model_or_config) -> type[Task]:
    """The task of a model (by its class), or of a saved config (by the class it names in `architectures`)."""
    if hasattr(model_or_config, "config"):
        from ..unwrap import task_model

        names = {type(task_model(model_or_config)).__name__}
    else:
        names = set(getattr(model_or_config, "architectures", None) or [])
    for task in TASKS.values():
        if task.model_class.__name__ in names:
            return task
    known = ", ".join(t.model_class.__name__ for t in TASKS.values())
    if not names:  # a model class's save_pretrained always records it
        raise ValueError(f"the config names no model class (its `architectures` is empty); known: {known}")
    raise ValueError(f"no mmft task has the model class {sorted(names)}; known: {known}")


__all__ = ["CardInfo", "TASKS", "Task", "TaskData", "get_task", "register_task", "task_for_model"]
