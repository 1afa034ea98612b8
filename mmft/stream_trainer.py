"""`StreamingTrainer`: the HF `Trainer` fed by a `TrainStream`, each process reading its own share, resumable.

Three things differ from the `Trainer` on a streamed training split (`--streaming`):

- **No second split.** accelerate's `prepare` would shard a `datasets` stream again by process (or, by default,
  read every batch on process 0 and dispatch it); the stream is already split by `split_dataset_by_node`, so the
  loader is prepared as for one process: device placement and end-of-data tracking, no sharding.
- **The stream position is in every checkpoint.** The loader is torchdata's `StatefulDataLoader` (through
  accelerate), whose state holds each DataLoader worker's `IterableDataset.state_dict()` as of the last batch
  handed to training; each process writes it to `stream_state_<rank>.json` before the Trainer writes
  `trainer_state.json`, the file that marks a checkpoint complete (`mmft.checkpoints`).
- **Resume restores that position** instead of re-reading and skipping the batches already trained on (the
  Trainer's default, which after a first pass over the stream would land on the wrong rows). `--ignore_data_skip`
  starts the stream from its beginning instead, as it makes the Trainer do for a map-style dataset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .atomic import atomic_write_text
from .data.streaming import TrainStream
from .trainer import MMFTTrainer

STATE_FILE = "stream_state_{rank}.json"


def save_stream_state(folder: str | Path, rank: int, world_size: int, loader, stream: TrainStream) -> Path:
    """Write this process's stream position (loader state and the stream's pass number) into `folder`."""
    path = Path(folder) / STATE_FILE.format(rank=rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"world_size": world_size, "epoch": stream.epoch, "loader": loader.state_dict()}
    atomic_write_text(path, json.dumps(state))  # a kill never leaves half a state behind
    return path


def load_stream_state(folder: str | Path, rank: int, world_size: int) -> dict:
    path = Path(folder) / STATE_FILE.format(rank=rank)
    if not path.is_file():
        raise ValueError(
            f"{folder} holds no stream position for process {rank} ({path.name}): it was not saved by a --streaming "
            "run with this many processes. Resume with the same --streaming setup, or pass --ignore_data_skip true "
            "to start the stream from its beginning"
        )
    state = json.loads(path.read_text())
    if state["world_size"] != world_size:
        raise ValueError(
            f"{folder} was saved by {state['world_size']} processes, this run has {world_size}: each process's "
            "stream position belongs to its own share of the shards. Resume with the same number of processes, or "
            "pass --ignore_data_skip true to start the stream from its beginning"
        )
    return state


class StreamingTrainer(MMFTTrainer):
    """An `MMFTTrainer` whose training split is a `TrainStream` (see the module docstring)."""

    _stream_loader = None
    _resume_folder: str | None = None

    def train(self, resume_from_checkpoint: str | None = None, *args, **kwargs):
        if not isinstance(self.train_dataset, TrainStream):
            raise TypeError(
                "StreamingTrainer trains on a TrainStream (mmft.data.streaming); got "
                f"{type(self.train_dataset).__name__}"
            )
        restore = isinstance(resume_from_checkpoint, str) and not self.args.ignore_data_skip
        self._resume_folder = resume_from_checkpoint if restore else None
        self.args.ignore_data_skip = True  # the position comes from the stream state, never from skipping batches
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def get_train_dataloader(self) -> DataLoader:
        stream: TrainStream = self.train_dataset
        stream.split_by_node(self.args.process_index, self.args.world_size, self.args.data_seed or self.args.seed)
        workers = self.args.dataloader_num_workers
        loader = DataLoader(
            stream,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=workers > 0 and self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor if workers else None,
        )
        loader = prepare_data_loader(
            loader,
            self.args.device,
            num_processes=1,
            process_index=0,
            put_on_device=True,
            dispatch_batches=False,
            use_stateful_dataloader=True,
        )
        if self._resume_folder:
            state = load_stream_state(self._resume_folder, self.args.process_index, self.args.world_size)
            finished = state["loader"].get("_iterator_finished", False)
            # The Trainer counts passes from 0 again on resume; the stream keeps its own count (its shard order
            # and shuffle depend on it). A pass that had just ended resumes at the start of the next one.
            stream.epoch_offset = state["epoch"] + int(finished)
            if not finished:
                loader.load_state_dict(state["loader"])
        self._stream_loader = loader
        return loader

    def _save_checkpoint(self, model, trial) -> None:
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        save_stream_state(
            folder, self.args.process_index, self.args.world_size, self._stream_loader, self.train_dataset
        )
        self.accelerator.wait_for_everyone()  # every position is on disk before trainer_state.json completes it
        super()._save_checkpoint(model, trial)


def trainer_class(train) -> type[MMFTTrainer]:
    """The trainer for a training split: `StreamingTrainer` for a stream, else `MMFTTrainer`."""
    return StreamingTrainer if isinstance(train, TrainStream) else MMFTTrainer


__all__ = ["STATE_FILE", "StreamingTrainer", "load_stream_state", "save_stream_state", "trainer_class"]
