"""`--streaming` end to end: processes share the data exactly once (through `accelerate launch`), and a run killed
with SIGKILL resumes at the right sample.

The recipe is tests/helpers_stream_recipe.py (the VQA recipe whose collator writes each training batch's sample keys
to `keys_<rank>.jsonl`) on WebDataset shards written by the test. Each property has a negative control that breaks
it: every process reading the whole stream; a resume that does not restore the stream position.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers_data import make_webdataset
from helpers_launch import (
    REPO,
    kill_when,
    logged_steps,
    recipe_argv,
    recipe_command,
    run_recipe,
    save_tiny_text_tower,
    weights,
)
from helpers_multi_run import RUN_SEPARATOR, when_run
from helpers_stream_recipe import NO_NODE_SPLIT
from helpers_stream_recipe import main as stream_recipe

pytestmark = pytest.mark.e2e
SCRIPT = REPO / "tests" / "helpers_stream_recipe.py"
COMMON = [
    "--streaming",
    "true",
    "--lora_vision",
    "full",
    "--lora_text",
    "frozen",
    "--hidden_dropout",
    "0",
    "--seed",
    "0",
    "--save_strategy",
    "steps",
]


@pytest.fixture(scope="module")
def text_tower(tmp_path_factory) -> Path:
    return save_tiny_text_tower(tmp_path_factory.mktemp("stream_inputs") / "bert", dropout=0.0)


def _batches(output_dir: Path, rank: int = 0) -> list[list[str]]:
    path = output_dir / f"keys_{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _keys(output_dir: Path) -> list[list[str]]:
    """The keys each of the 2 processes trained on."""
    return [[key for batch in _batches(output_dir, rank) for key in batch] for rank in range(2)]


def test_two_processes_read_every_sample_exactly_once_per_pass(text_tower, tmp_path):
    data = make_webdataset(tmp_path / "wds", n_shards=4, rows_per_shard=6)
    everything = Counter({f"train-{s:05d}.tar/s{s}_{i}": 1 for s in range(4) for i in range(6)})
    # One pass (24 rows, 2 processes x batch 3 = 4 steps), then in the same launch the negative control: every
    # process reads the whole stream.
    flags = [*COMMON, "--per_device_train_batch_size", "3", "--max_steps", "4", "--save_steps", "4"]
    command = recipe_command(tmp_path / "split", text_tower, data, *flags, processes=2, script=SCRIPT)
    run_recipe([*command, RUN_SEPARATOR, NO_NODE_SPLIT, *recipe_argv(tmp_path / "unsplit", text_tower, data, *flags)])
    seen = _keys(tmp_path / "split")
    assert Counter(seen[0] + seen[1]) == everything
    shards = [{key.split("/")[0] for key in keys} for keys in seen]
    assert shards == [{"train-00000.tar", "train-00002.tar"}, {"train-00001.tar", "train-00003.tar"}]  # whole shards

    unsplit = _keys(tmp_path / "unsplit")
    assert unsplit[0] == unsplit[1] and Counter(unsplit[0] + unsplit[1]) != everything


# 6 shards x 4 rows, batch 4: 6 steps per pass. The kill lands after checkpoint-8, i.e. 2 batches into the second
# pass, whose shard order datasets reshuffles: restarting the pass, or reading it in the first pass's order, shows.
STEPS = 10
RESUME = [*COMMON, "--per_device_train_batch_size", "4", "--max_steps", str(STEPS), "--save_steps", "4"]


def test_killed_run_resumes_at_the_right_sample(text_tower, tmp_path, one_cpu_thread):
    data = make_webdataset(tmp_path / "wds", n_shards=6, rows_per_shard=4)
    reference, resumed, restarted = tmp_path / "reference", tmp_path / "resumed", tmp_path / "restarted"
    # One launch: the uninterrupted reference run, then the run that is killed after its 9th step.
    reference_then_killed = [
        *recipe_command(reference, text_tower, data, *RESUME, script=SCRIPT),
        RUN_SEPARATOR,
        *recipe_argv(resumed, text_tower, data, *RESUME),
    ]
    kill_when(reference_then_killed, tmp_path / "killed.log", when_run(1, lambda printed: logged_steps(printed) >= 9))
    expected = _batches(reference)
    assert len(expected) == STEPS + 1  # 10 trained + the one the loader had fetched ahead when training stopped
    assert (resumed / "checkpoint-8" / "stream_state_0.json").is_file()
    assert not (resumed / "model.safetensors").exists(), "the run finished before the kill"
    (resumed / "keys_0.jsonl").unlink()  # keep only what the resumed runs read
    shutil.copytree(resumed, restarted)  # the same killed run, for the negative control

    # The resumed run, then (after it, so it cannot touch it) the negative control: the same checkpoint resumed
    # without its stream state starts the stream from the beginning. Both in this process, on one thread.
    stream_recipe(recipe_argv(resumed, text_tower, data, *RESUME, "--resume_from_checkpoint", "auto"))
    stream_recipe(
        recipe_argv(
            restarted, text_tower, data, *RESUME, "--resume_from_checkpoint", "auto", "--ignore_data_skip", "true"
        )
    )
    assert _batches(resumed) == expected[8:], "the resumed run did not continue at batch 9"
    ours, theirs = weights(resumed / "model.safetensors"), weights(reference / "model.safetensors")
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs), "resumed weights differ from the reference"

    assert _batches(restarted) != expected[8:] and _batches(restarted)[0] == expected[0]
    ours = weights(restarted / "model.safetensors")
    assert not all(torch.equal(ours[key], theirs[key]) for key in theirs)
