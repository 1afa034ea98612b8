"""`MultiTaskStream`: the training batches of a multi-task run, one task per optimizer step, resumable bit-exactly.

Each micro-batch is `{"task": name, **collator(rows)}`, the rows read from that task's training dataset and
collated by that task's collator. Which task: `TaskSampler.draw()` once per optimizer step, so all
`gradient_accumulation_steps` micro-batches of a step come from one task (default), or once per micro-batch with
`mix_within_step=True` (the step's gradient then sums several tasks' losses).

**Row order.** Each task has its own order, a permutation of its rows seeded by (seed, task name, epoch), read from
its own position: a task's data is cycled independently of the others (a small task goes through more epochs). A
batch that runs past the end of an epoch continues in the next epoch's order, so every batch is full.

**Processes.** Every process draws the same task (the sampler is a function of (seed, draw number)) and cuts the
same *global* batch of `batch_size * num_processes` rows from that task's order; process r reads rows
`[r * batch_size, (r + 1) * batch_size)` of it, contiguous as accelerate's `BatchSamplerShard` gives a single-task
run (process r gets the r-th per-device batch of the global order). So 2 processes x B read exactly the rows
1 process x 2B reads, in the same order. The stream is sharded already: nothing (accelerate included) may shard it
again, and it must be iterated in the process that trains (not in DataLoader workers: each would hold a copy).

**Position.** `state_dict()`: the sampler's draws, each task's (epoch, offset) in global rows, and the optimizer
steps and micro-batches handed out. A stream built the same way and given it with `load_state_dict` continues with
exactly the batches the saved one would have produced next. Offsets count global rows, so a resume with another
number of processes (same global batch) continues from the same rows.

**With the HF Trainer** (`mmft.multitask.trainer.MultiTaskTrainer`): `get_train_dataloader` returns the stream
itself, sharded by `args.process_index` / `args.world_size`: no DataLoader and no `accelerator.prepare` (the
Trainer's `_prepare_inputs` moves each batch to the device; `"task"` stays a string). The stream has no `__len__`,
so the run needs `max_steps > 0` and the Trainer reads it as one long epoch, taking exactly
`gradient_accumulation_steps` batches per optimizer step. The Trainer's resume would re-read and skip
`global_step * gradient_accumulation_steps` batches (`skip_first_batches`); instead the state is saved with each
checkpoint and loaded back, and `ignore_data_skip` is set so nothing is skipped.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from .sampling import TaskSampler

STATE_VERSION = 1


class TaskOrder:
    """One task's row order: a seeded permutation per epoch, read from (epoch, offset), crossing epochs as needed."""

    def __init__(self, name: str, size: int, seed: int) -> None:
        self.name, self.size, self.seed = name, size, seed
        self.key = zlib.crc32(name.encode("utf-8"))  # stable across processes and runs, unlike hash()
        self.epoch, self.offset = 0, 0
        self._cached: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the rows in `epoch`, a function of (seed, task name, epoch) alone."""
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, np.random.default_rng([self.seed, self.key, epoch]).permutation(self.size))
        return self._cached[1]

    def take(self, count: int) -> np.ndarray:
        """The next `count` rows of the order (advancing it)."""
        parts = []
        while count > 0:
            chunk = self.permutation(self.epoch)[self.offset : self.offset + count]
            parts.append(chunk)
            count -= len(chunk)
            self.offset += len(chunk)
            if self.offset == self.size:
                self.epoch, self.offset = self.epoch + 1, 0
        return np.concatenate(parts)


def _read(dataset, rows: Sequence[int]) -> list:
    """The examples at `rows`, in one call where the dataset reads batches (`datasets.Dataset.__getitems__`)."""
    getitems = getattr(dataset, "__getitems__", None)
    return getitems(list(rows)) if getitems is not None else [dataset[row] for row in rows]


class MultiTaskStream(IterableDataset):
    """An endless stream of one process's multi-task training micro-batches (see the module docstring).

    `datasets` / `collators`: task name -> training dataset (indexable, with `len`) / collator (examples -> batch);
    the same task names as `sampler.tasks`, whose sizes must be the datasets' lengths.
    `batch_sizes`: rows per process and micro-batch, one number for every task or one per task.
    `seed`: seeds every task's row order (the sampler has its own seed).
    `process_index` / `num_processes`: this process's share (also settable later with `shard`).
    """

    def __init__(
        self,
        datasets: Mapping[str, Any],
        collators: Mapping[str, Callable[[list], Mapping[str, Any]]],
        sampler: TaskSampler,
        batch_sizes: int | Mapping[str, int],
        *,
        gradient_accumulation_steps: int = 1,
        mix_within_step: bool = False,
        seed: int = 0,
        process_index: int = 0,
        num_processes: int = 1,
    ) -> None:
        tasks = list(sampler.tasks)
        for what, mapping in (("datasets", datasets), ("collators", collators)):
            if set(mapping) != set(tasks):
                raise ValueError(
                    f"the {what} name tasks {sorted(mapping)}, the sampler {sorted(tasks)}: give both the same"
                )
        wrong = [
            f"{t} ({len(datasets[t])} rows, sampler {sampler.sizes[t]})"
            for t in tasks
            if len(datasets[t]) != sampler.sizes[t]
        ]
        if wrong:
            raise ValueError(f"the sampler's task sizes are not the datasets' lengths: {', '.join(wrong)}")
        sizes = dict.fromkeys(tasks, batch_sizes) if isinstance(batch_sizes, int) else dict(batch_sizes)
        if set(sizes) != set(tasks) or any(int(b) < 1 for b in sizes.values()):
            raise ValueError(f"batch sizes must be one number >= 1 or one per task ({', '.join(tasks)}); got {sizes}")
        if gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be >= 1, got {gradient_accumulation_steps}")
        self.datasets, self.collators, self.sampler = dict(datasets), dict(collators), sampler
        self.batch_sizes = {t: int(b) for t, b in sizes.items()}
        self.gradient_accumulation_steps, self.mix_within_step = gradient_accumulation_steps, mix_within_step
        self.seed = int(seed)
        self.orders = {t: TaskOrder(t, len(datasets[t]), self.seed) for t in tasks}
        self.steps, self.micro_in_step = 0, 0  # optimizer steps completed; micro-batches into the current one
        self.shard(process_index, num_processes)

    def shard(self, process_index: int, num_processes: int) -> None:
        """Read process `process_index`'s share of `num_processes` (call before iterating)."""
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process_index {process_index} is not in [0, {num_processes})")
        self.process_index, self.num_processes = process_index, num_processes

    def next_rows(self) -> tuple[str, np.ndarray]:
        """The task and this process's rows (indices into the task's dataset) of the next micro-batch; advances."""
        if self.mix_within_step or self.micro_in_step == 0:
            task = self.sampler.draw()
        else:
            task = self.sampler.peek(self.sampler.draws - 1)  # the task this step drew at its first micro-batch
        size = self.batch_sizes[task]
        rows = self.orders[task].take(size * self.num_processes)  # the global batch, the same on every process
        self.micro_in_step += 1
        if self.micro_in_step == self.gradient_accumulation_steps:
            self.steps, self.micro_in_step = self.steps + 1, 0
        return task, rows[self.process_index * size : (self.process_index + 1) * size]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if get_worker_info() is not None:
            raise RuntimeError(
                "MultiTaskStream is read in the training process (its position is saved with each checkpoint); "
                "iterate it directly or with --dataloader_num_workers 0, not in DataLoader workers"
            )
        while True:
            task, rows = self.next_rows()
            batch = self.collators[task](_read(self.datasets[task], rows.tolist()))
            if "task" in batch:
                raise ValueError(f"the {task} collator returned a 'task' key; the stream sets it, drop it there")
            yield {"task": task, **batch}

    def state_dict(self) -> dict[str, Any]:
        """The stream's position (JSON-serialisable): sampler, each task's epoch and offset, steps handed out."""
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "steps": self.steps,
            "micro_in_step": self.micro_in_step,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "mix_within_step": self.mix_within_step,
            "sampler": self.sampler.state_dict(),
            "orders": {t: {"size": o.size, "epoch": o.epoch, "offset": o.offset} for t, o in self.orders.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state` (a `state_dict()` of a stream over the same tasks and rows, with the same seed)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"multi-task stream state version {state.get('version')}; this mmft reads {STATE_VERSION}")
        saved = {t: o["size"] for t, o in state["orders"].items()}
        mine = {t: o.size for t, o in self.orders.items()}
        if saved != mine or state["seed"] != self.seed:
            raise ValueError(
                f"the saved multi-task stream read other data (tasks and rows {saved}, seed {state['seed']}; now "
                f"{mine}, seed {self.seed}). Resume with the same training splits and --seed, or pass "
                "--ignore_data_skip true to start the stream afresh"
            )
        mid_step = state["micro_in_step"] != 0
        if mid_step and (state["gradient_accumulation_steps"], state["mix_within_step"]) != (
            self.gradient_accumulation_steps,
            self.mix_within_step,
        ):
            raise ValueError("the stream was saved inside an optimizer step: resume with the same accumulation setup")
        self.sampler.load_state_dict(state["sampler"])
        for task, order in self.orders.items():
            order.epoch, order.offset = int(state["orders"][task]["epoch"]), int(state["orders"][task]["offset"])
        self.steps, self.micro_in_step = int(state["steps"]), int(state["micro_in_step"])


__all__ = ["MultiTaskStream", "TaskOrder"]
