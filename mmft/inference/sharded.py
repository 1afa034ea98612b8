"""One sharded map-and-gather: rows [0, count) split over the processes, computed where they land, gathered in order.

The evaluations that score outside the Trainer's prediction loop (retrieval's re-ranking, captioning's generation)
use it; VQA and classification are scored by `Trainer.predict`, whose prepared DataLoader shards and gathers the
same way for them. Shards are *contiguous* (process i takes rows [i * per, (i + 1) * per), per = ceil(count / N)):
gathered in rank order they are already in row order, so no positions travel with the results and nothing is sorted
back, and each process reads one `select(range(...))` of its split. Results travel with accelerate's `gather_object`
(pickled), so a shard may be a list of anything or a tensor; with one process (or no accelerator) nothing is
gathered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch


def shard_bounds(count: int, processes: int, index: int) -> tuple[int, int]:
    """Rows [start, stop) of process `index` of `processes`: contiguous, ceil(count / processes) each but the last
    (which may be short or, with fewer rows than processes, empty)."""
    per = math.ceil(count / processes)
    start = min(count, index * per)
    return start, min(count, start + per)


def map_and_gather(
    count: int, compute: Callable[[int, int], Sequence[Any] | torch.Tensor], accelerator=None
) -> list[Any] | torch.Tensor:
    """`compute(start, stop)` (one result per row of [start, stop), as a list or a tensor whose first dimension is the
    rows) over this process's shard of rows [0, count), gathered from every process in row order: a list, or one
    tensor (on the CPU) when `compute` returns tensors. Every process must call it (it is a collective)."""
    processes = accelerator.num_processes if accelerator is not None else 1
    if processes == 1:
        return compute(0, count)
    from accelerate.utils import gather_object

    local = compute(*shard_bounds(count, processes, accelerator.process_index))
    if isinstance(local, torch.Tensor):
        local = local.cpu()
    shards = gather_object([local])  # one entry per process, in rank order
    if isinstance(local, torch.Tensor):
        return torch.cat(shards)
    return [result for shard in shards for result in shard]


__all__ = ["map_and_gather", "shard_bounds"]
