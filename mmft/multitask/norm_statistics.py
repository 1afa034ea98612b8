"""Per-task normalisation statistics: a shared tower's BatchNorm running statistics, kept once per task.

Tasks trained together read images from different datasets (easy-VQA's single shapes on white, the scenes' tinted
pictures of one to three shapes). A BatchNorm layer's running mean and variance would then average the datasets, and
each task would be scored with the statistics of a mixture it never sees: in the offline default, a joint run's
retrieval scored text-to-image R@1 0.555 with the mixed statistics and 0.882 once they were re-estimated on scenes
images alone, with the same weights (docs/multitask.md). So the joint model keeps each BatchNorm layer's running
statistics per task (as domain-specific batch normalisation does) while its affine weights, like every other weight,
stay shared: a task's forward runs with its own statistics and, in training, updates only those.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def batch_norms(module: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """The BatchNorm layers under `module` that track running statistics, by name, in module order."""
    return [
        (name, norm)
        for name, norm in module.named_modules()
        if isinstance(norm, _BatchNorm) and norm.track_running_stats and norm.running_mean is not None
    ]


class _Statistics(nn.Module):
    """One task's copy of every layer's running statistics (buffers `<layer index>_<buffer>`)."""

    def __init__(self, norms: list[_BatchNorm]) -> None:
        super().__init__()
        for index, norm in enumerate(norms):
            for buffer in BUFFERS:
                self.register_buffer(f"{index}_{buffer}", getattr(norm, buffer).detach().clone())


class TaskNormStatistics(nn.Module):
    """The running statistics of the BatchNorm layers under `owner` (a shared core), one copy per task.

    `activate(task)` copies that task's statistics into the layers (before its forward, its evaluation or its save);
    `keep(task)` copies the layers' statistics back into the task's copy (after a training forward updated them).
    The layers are looked up under `owner` on each call, so a tower replaced after construction is still the one used.
    """

    def __init__(self, owner: nn.Module, tasks: list[str]) -> None:
        super().__init__()
        norms = [norm for _, norm in batch_norms(owner)]
        self.names = [name for name, _ in batch_norms(owner)]
        self.tasks = nn.ModuleDict({task: _Statistics(norms) for task in tasks})
        self._owner = [owner]  # a plain list: the owner is registered elsewhere, not as a child of this module
        self.active: str | None = None

    def _pairs(self, task: str):
        statistics = self.tasks[task]
        norms = dict(batch_norms(self._owner[0]))
        for index, name in enumerate(self.names):
            for buffer in BUFFERS:
                yield getattr(norms[name], buffer), getattr(statistics, f"{index}_{buffer}")

    def activate(self, task: str) -> None:
        """Put task `task`'s running statistics into the BatchNorm layers."""
        with torch.no_grad():
            for live, kept in self._pairs(task):
                live.copy_(kept)
        self.active = task

    def keep(self, task: str) -> None:
        """Store the layers' running statistics as task `task`'s (after its training forward)."""
        with torch.no_grad():
            for live, kept in self._pairs(task):
                kept.copy_(live)


__all__ = ["TaskNormStatistics", "batch_norms"]
