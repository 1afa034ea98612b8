"""`MMFTForMultiTask`: one shared `MMFTModel` (towers, projections, bridge) and a head per task, each head being its
task's registered model class minus its core.

Each task's model is built from the registry (`mmft.TASKS.model_class(name)`) with the task's config
(`task_config`), and its core is then replaced by the shared one, so the task model and the joint model hold the
same modules: `for_task(name)` returns that task model (an ordinary single-task model, sharing every weight), and
`forward(task=name, **batch)` is its forward. The joint model registers the core once (`mmft.*`) and each task's own
modules under `heads.<task>.*`; the task models themselves are kept outside the module tree, so no parameter is
counted, saved or optimised twice. No task needs code here: a task registered with `mmft.register_task` joins as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from transformers import PreTrainedConfig

from ..auto import new_auto_class
from ..modeling_mmft import MMFTModel, MMFTPreTrainedModel
from ..tasks import TASKS
from ..towers import BatchShapes
from .configuration import MMFTMultiTaskConfig, normalised_overrides, task_config
from .norm_statistics import TaskNormStatistics, batch_norms

AutoModelForMultiTask = new_auto_class(
    "AutoModelForMultiTask",
    "Loads a multi-task mmft model (`MMFTForMultiTask`: shared towers and bridge, a head per task) from a folder.",
)


def task_model_class(name: str) -> type[MMFTPreTrainedModel]:
    """The registered head of task `name` (read without loading its `Task` class); ValueError naming the known."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS.model_class(name)


class MMFTForMultiTask(MMFTPreTrainedModel):
    """
    Shared towers and bridge (`self.mmft`) with one head per task of `config.tasks` (`self.heads[task]`).

    `forward(task="vqa", **batch)` runs task `vqa`'s model on the shared core and returns its own output class;
    `for_task("vqa")` is that single-task model, sharing the weights, which saves as an ordinary checkpoint of its
    task (its Auto class, pipeline and `mmft predict` load it).

    Example:

    ```python
    >>> model = MMFTForMultiTask.from_vision_text_pretrained(
    ...     vision="efficientnet_lite0", text="minilm",
    ...     tasks={"vqa": {"labels": answers}, "classification": {"labels": ["false", "true"]}, "retrieval": {}})
    >>> model(task="vqa", **vqa_batch).loss
    >>> model.for_task("vqa").save_pretrained("vqa-model")   # AutoModelForVisualQuestionAnswering loads it
    ```
    """

    config_class = MMFTMultiTaskConfig
    config: MMFTMultiTaskConfig
    auto_class = AutoModelForMultiTask

    def __init__(self, config: MMFTMultiTaskConfig, vision_tower=None, text_tower=None) -> None:
        super().__init__(config)
        if not config.tasks:
            raise ValueError("a multi-task model needs at least one task: tasks={'vqa': {...}, ...}")
        self.mmft = MMFTModel(config, vision_tower, text_tower)
        # Outside the module tree (a plain dict): their modules are registered once, here and under `heads`.
        self._task_models: dict[str, MMFTPreTrainedModel] = {}
        heads = {}
        for name in config.tasks:
            model = self._task_model(name)
            prefix = model.base_model_prefix
            heads[name] = nn.ModuleDict({child: module for child, module in model.named_children() if child != prefix})
            self._task_models[name] = model
        self.heads = nn.ModuleDict(heads)
        # One set of BatchNorm running statistics per task (the tasks' images differ: see `norm_statistics`)
        self.norm_statistics = (
            TaskNormStatistics(self.mmft, list(config.tasks))
            if config.task_norm_statistics and batch_norms(self.mmft)
            else None
        )
        self._check_towers()
        self.post_init()

    def _task_model(self, name: str) -> MMFTPreTrainedModel:
        """Task `name`'s model built around the shared towers; its own core (projections, bridge) is then replaced
        by the shared one (building it is the price of needing no per-task code: a head may read the core in
        `__init__`, e.g. the bridge's pooled size)."""
        core = self.mmft
        model = task_model_class(name)(
            task_config(self.config, name), vision_tower=core.vision_tower, text_tower=core.text_tower
        )
        setattr(model, model.base_model_prefix, core)
        return model

    def _check_towers(self) -> None:
        """One tower per kind: two heads bringing towers of one kind (two decoders) would leave a `LoraPlan` unable
        to say which it means."""
        owners: dict[str, tuple[str, nn.Module]] = {}
        for name, model in self._task_models.items():
            for kind, tower in model.towers().items():
                if kind in owners and owners[kind][1] is not tower:
                    raise ValueError(
                        f"tasks {owners[kind][0]!r} and {name!r} each bring a {kind} tower; a multi-task model holds "
                        f"one tower per kind (drop one of the two tasks)"
                    )
                owners.setdefault(kind, (name, tower))

    # -- the tasks -----------------------------------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        """The tasks of this model, in head order."""
        return list(self._task_models)

    def for_task(self, name: str) -> MMFTPreTrainedModel:
        """Task `name`'s single-task model (its registered class, its own config), holding this model's modules: no
        copy, a change to either shows in both. `save_pretrained` on it writes an ordinary checkpoint of the task.

        It also puts the task's own BatchNorm running statistics into the shared towers (`norm_statistics`), so call
        it again before using a task model after another task's forward."""
        if name not in self._task_models:
            raise ValueError(f"unknown task {name!r}; this model's tasks: {', '.join(self._task_models)}")
        if self.norm_statistics is not None:
            self.norm_statistics.activate(name)
        return self._task_models[name]

    def train(self, mode: bool = True) -> MMFTForMultiTask:
        """As for every module; each task model's own flag follows (its children are this model's)."""
        super().train(mode)
        for model in self._task_models.values():
            model.training = mode
        return self

    def forward(self, task: str, **batch: Any) -> Any:
        """Task `task`'s forward on the shared core, with that task's inputs and BatchNorm statistics; returns its
        own output class. In training the statistics it updates are kept as the task's."""
        output = self.for_task(task)(**batch)
        if self.training and self.norm_statistics is not None:
            self.norm_statistics.keep(task)
        return output

    # -- what shared code asks the model -------------------------------------------------------------------------------
    def towers(self) -> dict[str, nn.Module]:
        """The shared towers, and any tower a head brings (a captioning head's decoder), once each."""
        towers = dict(super().towers())
        for model in self._task_models.values():
            towers.update(model.towers())
        return towers

    def part_flops(self, shapes: BatchShapes, task: str | None = None) -> dict[str, float]:
        """Forward FLOPs per sample of each part for task `task`'s batch of `shapes` (its model's `part_flops`). With
        no task: each part's largest over the tasks, an upper bound of one step that draws one task."""
        if task is not None:
            return self.for_task(task).part_flops(shapes)
        parts: dict[str, float] = {}
        for model in self._task_models.values():
            for part, flops in model.part_flops(shapes).items():
                parts[part] = max(parts.get(part, 0.0), flops)
        return parts

    def head_flops(self, image_tokens: int, text_tokens: int, task: str | None = None) -> float:
        """Forward FLOPs per sample of task `task`'s head; with no task, the largest head's."""
        names = [task] if task is not None else self.task_names
        return max(self.for_task(name).head_flops(image_tokens, text_tokens) for name in names)

    # -- factory ---------------------------------------------------------------------------------------------------
    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision: str | PreTrainedConfig,
        text: str | PreTrainedConfig,
        tasks: Mapping[str, Mapping[str, Any] | None],
        bridge: str = "co_attention",
        **shared: Any,
    ) -> MMFTForMultiTask:
        """
        Join a pretrained vision tower and text tower with a fresh bridge and a fresh head per task.

        Args:
            vision, text, bridge, **shared: as in `MMFTPreTrainedModel.from_vision_text_pretrained`; `shared` takes
                the shared `MMFTConfig` fields (`num_bridge_layers`, `hidden_size`, `vision_model_args`, ...).
            tasks: `{task name: head overrides}`: `labels=[...]` (the label vocabulary, as `labels=` of a single
                task), and any `MMFTConfig` field the head reads (`problem_type`, `projection_dim`,
                `decoder_config` for a decoder head, built with random weights from its config).
        """
        unknown = [name for name in tasks if name not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(sorted(TASKS))}")
        if "labels" in shared:
            raise TypeError("labels belong to a task: pass tasks={'vqa': {'labels': [...]}, ...}")
        overrides = {name: normalised_overrides(task_overrides) for name, task_overrides in tasks.items()}
        return super().from_vision_text_pretrained(vision, text, bridge, tasks=overrides, **shared)


__all__ = ["AutoModelForMultiTask", "MMFTForMultiTask", "task_model_class"]
