"""The VQA recipe with a tracing collator: every training batch's sample keys, one JSON line per batch and process.

Used by tests/test_streaming_e2e.py through `accelerate launch`: `<output_dir>/keys_<rank>.jsonl` lists, in the order
the DataLoader produced them, the `row_key`s of each streamed training batch (the loader runs one batch ahead of the
optimizer, so the last line may be a batch that was fetched but not trained on). A run whose arguments start with
`--no_node_split` makes every process read the whole stream: the negative control of the exactly-once test. Runs
separated by `::` train one after another in the same launch (the processes start once).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from helpers_multi_run import run_groups

from mmft.arguments import parse_recipe_args
from mmft.data.collator import ROW_KEY
from mmft.data.streaming import TrainStream
from mmft.tasks.vqa.task import VQATask
from mmft.training import run

NO_NODE_SPLIT = "--no_node_split"


class KeyRecorder:
    def __init__(self, collator, path: Path) -> None:
        self.collator, self.path = collator, path

    def __call__(self, examples: list[dict]):
        if ROW_KEY in examples[0]:  # a streamed training batch (eval rows carry no key)
            with self.path.open("a") as handle:
                handle.write(json.dumps([example[ROW_KEY] for example in examples]) + "\n")
        return self.collator(examples)


class TracedVQATask(VQATask):
    def collator(self, processor, max_length: int):
        output_dir = Path(self.trace_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        rank = os.environ.get("RANK", "0")
        return KeyRecorder(super().collator(processor, max_length), output_dir / f"keys_{rank}.jsonl")


def main(argv: list[str]) -> None:
    """One recipe run; with `--no_node_split` first, every process reads the whole stream (the negative control)."""
    original = TrainStream.split_by_node
    if argv[:1] == [NO_NODE_SPLIT]:
        argv = argv[1:]
        TrainStream.split_by_node = lambda self, rank, world_size, seed=0: original(self, 0, 1, seed)
    try:
        args = parse_recipe_args(argv, TracedVQATask)
        TracedVQATask.trace_dir = args.training.output_dir
        run(TracedVQATask, args)
    finally:
        TrainStream.split_by_node = original


if __name__ == "__main__":
    run_groups(sys.argv[1:], main)  # runs separated by RUN_SEPARATOR, one after another
