"""Load a saved mmft model for inference (the CLI, the demo page): model, processor and its task, checked first."""

from __future__ import annotations

from pathlib import Path


def load_model(path: str, task: str | None = None, command: str = "predict"):
    """(model, processor, task class) of a saved mmft folder or Hub repo; adapter-only folders are merged on load.

    Refused with one sentence (SystemExit) before any weight is read: a model of another task than `task`, or whose
    task does not serve `command` (`Task.commands`)."""
    from transformers import AutoConfig, AutoProcessor

    import mmft  # noqa: F401  (registers the Auto classes)

    from .tasks import TASKS, get_task, task_for_model

    saved_task = task_for_model(AutoConfig.from_pretrained(path))
    if task is not None and get_task(task) is not saved_task:
        raise SystemExit(
            f"mmft: {path} holds a {saved_task.name!r} model ({saved_task.model_class.__name__}), "
            f"not a {task!r} one; drop --task or pass --task {saved_task.name}"
        )
    if command not in saved_task.commands:
        serving = ", ".join(name for name, other in TASKS.items() if command in other.commands)
        usable = ", ".join(f"mmft {name}" for name in saved_task.commands)
        raise SystemExit(
            f"mmft {command}: {path} holds a {saved_task.name!r} model; `mmft {command}` works for "
            f"{serving} models only (this one serves: {usable})"
        )
    from .safe_loading import PickledWeightsError

    folder = Path(path)
    try:
        if (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").is_file():
            from .hub import load_adapter_model

            model = load_adapter_model(path, merge=True)
        else:
            model = saved_task.model_class.from_pretrained(path)
    except PickledWeightsError as error:  # safetensors only: say why, without a traceback
        raise SystemExit(f"mmft: {error}") from None
    return model.eval(), AutoProcessor.from_pretrained(path), saved_task


__all__ = ["load_model"]
