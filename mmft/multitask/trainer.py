"""`MultiTaskTrainer`: the `MMFTTrainer` fed by a `MultiTaskStream`, with the stream's position in every checkpoint.

How the stream plugs into the HF Trainer (5.x `_inner_training_loop`):

- **Loader.** `get_train_dataloader` returns the stream itself, sharded by `args.process_index` /
  `args.world_size`. No DataLoader and no `accelerator.prepare`: the stream is sharded already, and a prefetching
  wrapper (accelerate's `DataLoaderShard` reads one batch ahead, DataLoader workers many) would move the stream
  past the batches trained on, so its saved position would be wrong. The Trainer's `_prepare_inputs` moves the
  tensors to the device. The stream has no length: the run needs `max_steps > 0`, and the Trainer then takes exactly
  `gradient_accumulation_steps` batches per optimizer step from one long epoch.
- **Save.** Before the Trainer writes a checkpoint (its `trainer_state.json` marks the folder complete,
  `mmft.checkpoints`), the main process writes the stream's `state_dict()` to `multitask_stream.json` in it. The
  position is the same on every process (offsets count global rows), so one file serves all. A stream that has
  handed out more batches than were trained on (something read it ahead) is an error, not a silently wrong resume.
- **Resume.** The Trainer would re-read and skip `global_step * gradient_accumulation_steps` batches
  (`get_resumed_dataloader` -> `skip_first_batches`); here the stream loads its saved position instead and
  `ignore_data_skip` is set for the run, so nothing is skipped (the RNG states are then restored at the start of
  the resumed epoch). `--ignore_data_skip true` from the user starts the stream afresh, as it makes the Trainer do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..atomic import atomic_write_text
from ..trainer import MMFTTrainer
from ..unwrap import task_model
from .stream import MultiTaskStream

STATE_FILE = "multitask_stream.json"


def save_stream_state(folder: str | Path, stream: MultiTaskStream) -> Path:
    """Write the stream's position into checkpoint `folder` (atomically: a kill never leaves half a file)."""
    path = Path(folder) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(stream.state_dict()))
    return path


def load_stream_state(folder: str | Path) -> dict[str, Any]:
    """The stream position saved in checkpoint `folder`; a clear error if it holds none."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise ValueError(
            f"{folder} holds no multi-task stream position ({STATE_FILE}): it was not written by a multi-task run. "
            "Resume a checkpoint of this run, or pass --ignore_data_skip true to start the task stream afresh"
        )
    return json.loads(path.read_text())


class MultiTaskStreamMixin:
    """Trainer methods that train on a `MultiTaskStream` and save/restore its position (see the module docstring).

    Mix into a `transformers.Trainer` subclass ahead of it: `class T(MultiTaskStreamMixin, MMFTTrainer)`.
    """

    _resume_folder: str | None = None
    _stream_start = 0  # the stream's optimizer steps when this train() call began reading it

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        if not isinstance(self.train_dataset, MultiTaskStream):
            raise TypeError(
                f"{type(self).__name__} trains on a MultiTaskStream (mmft.multitask.stream); got "
                f"{type(self.train_dataset).__name__}"
            )
        folder = get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True else resume_from_checkpoint
        user_skip = self.args.ignore_data_skip
        self._resume_folder = folder if isinstance(folder, str) and not user_skip else None
        self.args.ignore_data_skip = True  # the position comes from the stream state, never from skipping batches
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self.args.ignore_data_skip = user_skip

    def get_train_dataloader(self) -> MultiTaskStream:
        stream: MultiTaskStream = self.train_dataset
        stream.shard(self.args.process_index, self.args.world_size)
        if self._resume_folder:
            stream.load_state_dict(load_stream_state(self._resume_folder))
            self._resume_folder = None
        self._stream_start = stream.steps
        return stream

    def _save_checkpoint(self, model, trial) -> None:
        stream: MultiTaskStream = self.train_dataset
        # Steps read in this train() call against steps trained in it (`_initial_global_step`: the Trainer's step
        # when it started or resumed); they differ by design only in the stream's count after --ignore_data_skip.
        read = stream.steps - self._stream_start
        trained = self.state.global_step - self._initial_global_step
        if (read, stream.micro_in_step) != (trained, 0):
            raise RuntimeError(
                f"the multi-task stream handed out {read} optimizer steps (+{stream.micro_in_step} micro-batches) "
                f"while {trained} were trained: something read it ahead (a DataLoader or accelerate wrapper around "
                "it?), so its position cannot be saved. Let the Trainer iterate it directly"
            )
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_stream_state(folder, stream)
        super()._save_checkpoint(model, trial)


class MultiTaskTrainer(MultiTaskStreamMixin, MMFTTrainer):
    """`MMFTTrainer` (strict resumes, fingerprints) training on a `MultiTaskStream`."""


JOINT_SCORE = "joint_score"  # `eval_joint_score`: the tasks' main metrics, weighted by `selection_weight`


class JointTrainer(MultiTaskTrainer):
    """The multi-task Trainer: each step's loss is weighted by its task's `loss_weight` and logged per task, and an
    evaluation scores every task on its validation split, with their weighted main metrics as `eval_joint_score`.

    `parts`: the run's tasks (`mmft.multitask_arguments.TaskPart`: `name`, `task`, `weights`, `data`, and `trainer`,
    the task's own Trainer on the joint model's weights, which scores its validation split)."""

    def __init__(self, *args: Any, parts: list, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parts = {part.name: part for part in parts}
        self._task_losses: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        name = inputs["task"]
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        self._task_losses.setdefault(name, []).append(loss.detach().float().item())
        loss = loss * self.parts[name].weights.loss
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a training log: each task's mean loss since the last one
            # Every process drew the same tasks, so each holds the same names; the mean over processes is the loss
            # of the global batch, as the Trainer's `loss` is (every process calls `log` for a training log).
            local = {name: sum(losses) / len(losses) for name, losses in self._task_losses.items()}
            logs.update({f"loss/{name}": mean for name, mean in self.mean_over_processes(local).items()})
            self._task_losses = {}
        if self.state.max_steps > 0 and self.state.global_step:
            # The stream has no length, so the Trainer's `epoch` is its count of batches read in this train() call
            # over max_steps: after a resume it restarts from 0. The share of max_steps done is the same figure in an
            # uninterrupted run and continues across a resume (each task's own epochs are in the stream's state).
            self.state.epoch = self.state.global_step / self.state.max_steps
        super().log(logs, *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics: dict[str, float] = {}
        score, total = 0.0, 0.0
        for name, part in self.parts.items():
            if part.data.validation is None:
                continue
            task_model(self.model).for_task(name)  # its own BatchNorm statistics in place
            task_metrics = part.trainer.evaluate(metric_key_prefix=f"{metric_key_prefix}_{name}")
            metrics.update(task_metrics)
            main = task_metrics.get(f"{metric_key_prefix}_{name}_{part.task.selection_metric()}")
            if main is not None and part.weights.selection > 0:
                score, total = score + part.weights.selection * main, total + part.weights.selection
        if total:
            metrics[f"{metric_key_prefix}_{JOINT_SCORE}"] = score / total
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


__all__ = [
    "JOINT_SCORE",
    "JointTrainer",
    "STATE_FILE",
    "MultiTaskStreamMixin",
    "MultiTaskTrainer",
    "load_stream_state",
    "save_stream_state",
]
