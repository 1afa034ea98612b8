"""`register_head`, which registers a head with its Auto class and its pipeline, and `new_auto_class`, which makes an
Auto class for a task transformers has none for (image-text classification, retrieval, a user's task).

They behave like transformers' own: `AutoModelForImageTextClassification.from_pretrained(folder)` builds the class
registered for the folder's config type (done by `mmft.register_task`, for the built-in tasks on `import mmft`), with
no `trust_remote_code`.
"""

from __future__ import annotations

from collections import OrderedDict

from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping


def new_auto_class(name: str, doc: str) -> type[_BaseAutoModelClass]:
    """A new, empty Auto class named `name` (`register_head` fills it)."""
    return type(
        name, (_BaseAutoModelClass,), {"__doc__": doc, "_model_mapping": _LazyAutoMapping(OrderedDict(), OrderedDict())}
    )


def register_head(
    model_class: type,
    auto_class: type | None = None,
    pipeline_task: str | None = None,
    pipeline_class: type | None = None,
) -> None:
    """Register a head (an `MMFTPreTrainedModel` subclass) with its Auto class for `MMFTConfig`, and its pipeline
    under `pipeline_task`. Each defaults to the head's own class attribute of that name (`auto_class`, ...), which
    every built-in head sets; `import mmft` registers those, `mmft.register_task` a task's."""
    from transformers.pipelines import PIPELINE_REGISTRY

    from .configuration_mmft import MMFTConfig

    auto_class = auto_class or getattr(model_class, "auto_class", None)
    pipeline_task = pipeline_task or getattr(model_class, "pipeline_task", None)
    pipeline_class = pipeline_class or getattr(model_class, "pipeline_class", None)
    if auto_class is None or pipeline_task is None or pipeline_class is None:
        raise TypeError(f"{model_class.__name__} needs an auto_class, a pipeline_task and a pipeline_class to register")
    auto_class.register(MMFTConfig, model_class, exist_ok=True)
    registered = PIPELINE_REGISTRY.supported_tasks.get(pipeline_task, {})
    if registered.get("impl") is not pipeline_class or registered.get("pt") != (auto_class,):  # else it warns
        PIPELINE_REGISTRY.register_pipeline(pipeline_task, pipeline_class=pipeline_class, pt_model=auto_class)


__all__ = ["new_auto_class", "register_head"]
