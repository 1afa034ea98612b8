"""`MMFTMultiTaskConfig`: the shared towers and bridge of an `MMFTConfig`, plus the tasks of the heads on them, and
`task_config`, which derives a task's own ordinary single-task `MMFTConfig` from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ..configuration_mmft import MMFTConfig

# Fields of the joint config that are not the towers' or bridge's: its own bookkeeping, and the label vocabulary,
# which belongs to each head (a task's overrides give it; the joint model's own would be transformers' defaults).
_NOT_SHARED = (
    "tasks",
    "task_norm_statistics",
    "model_type",
    "architectures",
    "auto_map",
    "transformers_version",
    "id2label",
    "label2id",
    "num_labels",
)


@strict
class MMFTMultiTaskConfig(MMFTConfig):
    r"""
    Configuration of `MMFTForMultiTask`: every `MMFTConfig` field describes the shared towers and bridge, and
    `tasks` names the heads on them.

    Args:
        tasks (`dict[str, dict]`):
            `{task name: head overrides}`. A name is a task registered in `mmft.TASKS` (built-in or
            added with `mmft.register_task`); its overrides are the `MMFTConfig` fields its head reads that differ
            from the shared ones (`id2label` / `label2id`, `problem_type`, `projection_dim`, `decoder_config`,
            `num_query_tokens`, ...). `task_config(config, name)` merges the two into that task's config.
        task_norm_statistics (`bool`, defaults to `True`):
            Keep the shared towers' BatchNorm running statistics once per task (`mmft.multitask.norm_statistics`):
            each task's forward, evaluation and saved model use the statistics of its own images. `False`: one set,
            averaged over every task's images.
    """

    model_type = "mmft_multitask"

    tasks: dict | None = None
    task_norm_statistics: bool = True

    def __post_init__(self, **kwargs):
        self.tasks = {name: normalised_overrides(overrides) for name, overrides in (self.tasks or {}).items()}
        super().__post_init__(**kwargs)


def normalised_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A task's overrides as they go in config.json: `labels=[...]` becomes `id2label` / `label2id` (as in
    `from_vision_text_pretrained`), a sub-config (`decoder_config`) becomes its dict."""
    overrides = dict(overrides or {})
    if (labels := overrides.pop("labels", None)) is not None:
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique; got duplicates in a task's label vocabulary")
        overrides["id2label"] = dict(enumerate(labels))
        overrides["label2id"] = {label: i for i, label in enumerate(labels)}
    if "id2label" in overrides:
        # config.json keeps keys as strings; ids are ints everywhere else
        overrides["id2label"] = {int(i): label for i, label in overrides["id2label"].items()}
        overrides.setdefault("label2id", {label: i for i, label in overrides["id2label"].items()})
    return {key: value.to_dict() if isinstance(value, PreTrainedConfig) else value for key, value in overrides.items()}


def task_config(config: MMFTMultiTaskConfig, name: str) -> MMFTConfig:
    """Task `name`'s own config: the shared fields of `config` with the task's overrides on top, an ordinary
    `MMFTConfig` (model type `mmft`), so the head saved alone loads with its task's Auto class."""
    if name not in (config.tasks or {}):
        raise ValueError(f"the model has no task {name!r}; its tasks: {', '.join(config.tasks or {}) or 'none'}")
    shared = {key: value for key, value in config.to_dict().items() if key not in _NOT_SHARED}
    return MMFTConfig.from_dict({**shared, **config.tasks[name]})


__all__ = ["MMFTMultiTaskConfig", "normalised_overrides", "task_config"]
