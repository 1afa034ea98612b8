"""Training rows as a stream: named, checked, split by process and transformed on the fly, with a resumable position.

`stream_splits` is what `Task.prepare_data` uses under `--streaming`:

- the **training split** becomes a `TrainStream`: each process reads its own shards (`split_dataset_by_node`, set
  by the trainer once it knows its rank), every row goes through the same checks as the pre-training pass of
  `mmft.data.validation` (`Column.problem`, the image header) plus the task's check against its targets, under the
  same bad-example policy, and the task's transform runs as rows are read. `state_dict`/`load_state_dict` are the
  stream position of this process (`datasets.IterableDataset.state_dict`), saved in every checkpoint;
- the **head** (the first `--streaming_head_rows` training rows, read twice) is where the label or answer
  vocabulary comes from, identically on every process;
- the **test split** (and the **validation split**, when the run has one) is materialised in memory (at most
  `--max_eval_samples` rows each) and validated as without streaming, so metrics and predictions.jsonl work for every
  task unchanged. A stream is never carved: a split the run needs must exist (`--eval_split`, `--validation_split`).

`--max_bad_fraction` on a stream: a process stops when more than that fraction of the rows it has read since it
(re)started are bad, counting at least 100 rows (so the first bad row never stops a run on its own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import islice
from typing import Any

import torch
from datasets import Dataset, DatasetDict, IterableDataset
from datasets.distributed import split_dataset_by_node

from .collator import ROW_KEY
from .columns import Column
from .rejects import BadExample, BadExamplePolicy
from .sources import DataError, SourceSpec
from .splits import choose_splits
from .stream_sources import ROW, open_streams
from .validation import find_bad_rows, row_problem, validate_split

logger = logging.getLogger("mmft.data")

FRACTION_FLOOR = 100  # rows a process reads before --max_bad_fraction judges the stream by its own count
TRANSFORM_BATCH = 16  # rows decoded per call of the task's transform
_CACHE_LIMIT = 4096  # image paths whose header check is remembered (a stream can name any number of files)


class RowNames:
    """`.map(with_indices=True)` function: names rows that have no sample key `p<process>-w<worker>-<n>`."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __call__(self, row: dict, index: int) -> dict:
        if row.get(ROW) is not None:
            return {ROW: row[ROW]}
        worker = torch.utils.data.get_worker_info()
        return {ROW: f"p{self.rank}-w{worker.id if worker else 0}-{index}"}


class RowChecks:
    """`.filter` function: a streamed row's checks, under the bad-example policy; False drops the row."""

    def __init__(
        self,
        split: str,
        columns: tuple[Column, ...],
        policy: BadExamplePolicy,
        target_problem: Callable[[dict], str | None] | None = None,
        kept: Callable[[dict], bool] | None = None,
    ) -> None:
        self.split, self.columns, self.policy = split, columns, policy
        self.target_problem, self.kept = target_problem, kept
        self.seen = self.bad = 0
        self.cache: dict[str, str | None] = {}

    def __call__(self, row: dict) -> bool:
        self.seen += 1
        if len(self.cache) > _CACHE_LIMIT:
            self.cache.clear()
        name, problem = row_problem(row["image"], row, self.columns, self.cache)
        if problem is None and self.target_problem is not None:
            problem = self.target_problem(row)
        if problem is None:
            return self.kept is None or self.kept(row)
        self.bad += 1
        self.policy.handle(BadExample(self.split, row[ROW], name, problem, "stream"))  # `raise`: stops here
        self.check_fraction()
        return False

    def check_fraction(self) -> None:
        limit = self.policy.max_bad_fraction
        if self.bad > limit * max(self.seen, FRACTION_FLOOR):
            examples = "; ".join(
                b.describe(self.policy.source) for b in list(self.policy.rejected(self.split).values())[:3]
            )
            raise DataError(
                f"{self.bad} of the {self.seen} rows of split {self.split!r} this process has streamed are bad "
                f"({self.bad / self.seen:.1%}), more than --max_bad_fraction {limit} (judged from {FRACTION_FLOOR} "
                f"rows on); that points at the data, not a few files. First ones: {examples}"
                + (f". All listed in {self.policy.rejects_file}" if self.policy.rejects_file else "")
            )


class Transformed:
    """`.map(batched=True)` function: the task's transform, each example keeping its row name for tracing."""

    def __init__(self, transform: Callable[[dict[str, list]], dict[str, list]]) -> None:
        self.transform = transform

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {**self.transform(batch), ROW_KEY: list(batch[ROW])}


class TrainStream(torch.utils.data.IterableDataset):
    """
    The training split as a stream of transformed examples, built on first use.

    Quacks like the `datasets.Dataset` a task's `attach` expects (`set_transform`); the trainer calls `split_by_node`
    before the first iteration, `set_epoch` at each pass, and `state_dict` / `load_state_dict` for the position.
    `epoch_offset` keeps the stream's pass number across a resume, where the trainer counts passes from 0 again.
    """

    def __init__(
        self, source: IterableDataset, columns: tuple[Column, ...], policy: BadExamplePolicy, shuffle_buffer: int = 0
    ) -> None:
        super().__init__()
        self.source, self.columns, self.policy = source, columns, policy
        self.shuffle_buffer, self.seed = shuffle_buffer, 0
        self.target_problem: Callable[[dict], str | None] | None = None
        self.kept: Callable[[dict], bool] | None = None
        self.transform: Callable | None = None
        self.rank, self.world_size, self.epoch_offset = 0, 1, 0
        self._stream: IterableDataset | None = None

    @property
    def n_shards(self) -> int:
        return self.source.n_shards

    def with_checks(
        self, target_problem: Callable[[dict], str | None] | None, kept: Callable[[dict], bool] | None
    ) -> TrainStream:
        self.target_problem, self.kept, self._stream = target_problem, kept, None
        return self

    def set_transform(self, transform: Callable[[dict[str, list]], dict[str, list]] | None) -> None:
        self.transform, self._stream = transform, None

    def split_by_node(self, rank: int, world_size: int, seed: int = 0) -> None:
        """Read only this process's share: whole shards when their count divides by `world_size`, else every
        `world_size`-th row (then every process reads every shard; see docs/streaming.md). `seed`: of the buffer."""
        self.rank, self.world_size, self.seed, self._stream = rank, world_size, seed, None
        if world_size > 1 and self.n_shards % world_size:
            logger.warning(
                "mmft: %d shards do not divide among %d processes: each process reads every shard and keeps "
                "1 row in %d",
                self.n_shards,
                world_size,
                world_size,
            )

    @property
    def stream(self) -> IterableDataset:
        if self._stream is None:
            self._stream = self._build()
        return self._stream

    def _build(self) -> IterableDataset:
        stream = self.source
        if self.world_size > 1:  # split before any map: a process never checks or decodes another's rows
            stream = split_dataset_by_node(stream, rank=self.rank, world_size=self.world_size)
        if self.shuffle_buffer:
            stream = stream.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        stream = stream.map(RowNames(self.rank), with_indices=True)
        stream = stream.filter(RowChecks("train", self.columns, self.policy, self.target_problem, self.kept))
        if self.transform is not None:
            columns = list(dict.fromkeys([*self.source.features, ROW]))
            stream = stream.map(
                Transformed(self.transform), batched=True, batch_size=TRANSFORM_BATCH, remove_columns=columns
            )
        return stream

    def __iter__(self):
        return iter(self.stream)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(self.epoch_offset + epoch)

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


def _materialise(stream: IterableDataset, limit: int | None) -> Dataset:
    rows = list(islice(stream, limit) if limit else stream)
    data = Dataset.from_list(rows, features=stream.features)
    if ROW not in data.column_names:
        data = data.add_column(ROW, list(range(len(data))))
    return data


def read_head(stream: IterableDataset, rows: int, columns: tuple[Column, ...], policy: BadExamplePolicy) -> Dataset:
    """The first `rows` good rows of the (unsplit) training stream, the same on every process; under `raise` a bad
    one stops the run now, under `skip` it is left for the stream to record when it is read for training."""
    head = _materialise(stream, rows)
    bad = list(find_bad_rows(head, "train", columns, head[ROW]))
    if bad and policy.mode == "raise":
        policy.handle(bad[0])
    skipped = {example.row for example in bad}
    return head.select([i for i, row in enumerate(head[ROW]) if row not in skipped]) if skipped else head


def stream_splits(
    spec: SourceSpec,
    columns: tuple[Column, ...],
    column_map: dict[str, str] | None = None,
    named: dict[str, Callable[[SourceSpec], DatasetDict]] | None = None,
    keep: tuple[str, ...] = (),
    max_eval_samples: int | None = None,
    policy: BadExamplePolicy | None = None,
    validation: bool = False,
) -> tuple[TrainStream, Dataset, Dataset | None, Dataset]:
    """(training stream, head rows of the training split, validated validation rows in memory (None: the run has
    none), validated test rows in memory). `validation`: whether the run evaluates during training."""
    policy = policy or BadExamplePolicy(source=spec.dataset or "dataset")
    streams = open_streams(spec, columns, column_map, named, keep)
    choice = choose_splits(spec, streams, validation)
    for role, missing in (("test", choice.test is None), ("validation", choice.carve_validation)):
        if missing:
            raise DataError(
                f"dataset {spec.dataset!r} has no {role} split (splits: {sorted(streams)}), and a stream cannot be "
                f"carved; name one with --{'eval_split' if role == 'test' else 'validation_split'}, or drop --streaming"
            )
    train_split = choice.train
    head = read_head(streams[train_split], spec.streaming_head_rows, columns, policy)
    held = {
        role: validate_split(_materialise(streams[split], max_eval_samples), role, spec.dataset, columns, policy)
        for role, split in (("validation", choice.validation), ("eval", choice.test))
        if split is not None
    }
    logger.warning(
        "mmft: streaming %r (%d shards); targets from its first %d rows; %d eval rows held in memory%s",
        train_split,
        streams[train_split].n_shards,
        len(head),
        sum(len(rows) for rows in held.values()),
        "" if max_eval_samples else " (bound them with --max_eval_samples)",
    )
    if not len(head):
        raise DataError(f"dataset {spec.dataset!r}: the training stream {train_split!r} has no usable row")
    stream = TrainStream(streams[train_split], columns, policy, spec.streaming_shuffle_buffer)
    return stream, head, held.get("validation"), held["eval"]


__all__ = ["FRACTION_FLOOR", "RowChecks", "TrainStream", "read_head", "stream_splits"]
