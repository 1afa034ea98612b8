"""Multi-task training, the data side: which task each step trains on (`sampling`) and the batch stream (`stream`).

The Trainer that saves and restores the stream's position (`mmft.multitask.trainer`) is imported from its module,
so importing the sampler or the stream does not pull in the training stack.
"""

from __future__ import annotations

from .sampling import STRATEGIES, TaskSampler, task_draw_counts
from .stream import MultiTaskStream

__all__ = ["STRATEGIES", "MultiTaskStream", "TaskSampler", "task_draw_counts"]
