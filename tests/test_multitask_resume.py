"""A multi-task run killed by SIGKILL after a checkpoint and resumed with `--resume_from_checkpoint` ends
bit-identical to an uninterrupted run: weights, every logged loss (the per-task `loss/<task>` too) and test metrics.
The task stream's saved position (multitask_stream.json) is what makes it so: started afresh instead, it differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_launch import ACCELERATE, REPO, final_metrics, kill_when, log_history, weights
from helpers_multitask_run import make_task_data, write_preset

from mmft.checkpoints import checkpoint_problems
from mmft.multitask.trainer import STATE_FILE
from mmft.multitask_training import main

pytestmark = pytest.mark.e2e
SAVE = ["--save_strategy", "steps", "--save_steps", "2", "--max_steps", "6"]


def _launch(preset: Path, *extra: str) -> list[str]:
    return [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(REPO / "accelerate_configs" / "cpu.yaml"),
        "--num_processes",
        "1",
        "--num_cpu_threads_per_process",
        "1",
        str(REPO / "recipes" / "multitask.py"),
        "--config",
        str(preset),
        *extra,
    ]


def _outcome(out: Path) -> tuple:
    # `epoch` included: the joint Trainer logs the share of max_steps done, which continues across a resume (the
    # HF Trainer's own count restarts from the resume step on a stream with no length: 0.17 for 0.83 at step 5)
    history = log_history(out / "checkpoint-6")
    timing = ("_runtime", "_per_second", "_seconds", "_preparation_time")  # per task, prefixed: not training
    metrics = {k: v for k, v in final_metrics(out).items() if not k.endswith(timing)}
    return weights(out / "model.safetensors"), history, metrics


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_text_dir, one_cpu_thread):
    root = tmp_path_factory.mktemp("mt_resume")
    data = make_task_data(root / "data")
    # temperature sampling: which task each step draws is random, so a stream resumed at the wrong draw shows
    preset = write_preset(root / "tasks.yaml", tiny_text_dir, data, root / "whole", task_sampling="temperature")
    assert main(["--config", str(preset), *SAVE]) == 0
    killed = root / "killed"
    # complete, not merely present: trainer_state.json exists (empty) from the moment the Trainer opens it, and a kill
    # in that instant left a checkpoint the resume rightly refuses (seen once in CI)
    ready = lambda _log: not checkpoint_problems(killed / "checkpoint-4")  # noqa: E731
    kill_when(_launch(preset, *SAVE, "--output_dir", str(killed)), root / "killed.log", ready, timeout=300)
    assert not (killed / "model.safetensors").exists()  # it died before the end
    return {"root": root, "preset": preset, "killed": killed}


def test_a_killed_run_resumes_bit_exactly(runs):
    killed = runs["killed"]
    assert (killed / "checkpoint-4" / STATE_FILE).is_file()
    argv = ["--config", str(runs["preset"]), *SAVE, "--output_dir", str(killed)]
    assert main([*argv, "--resume_from_checkpoint", str(killed / "checkpoint-4")]) == 0
    whole, resumed = _outcome(runs["root"] / "whole"), _outcome(killed)
    assert whole[0].keys() == resumed[0].keys()
    assert all((whole[0][k] == resumed[0][k]).all() for k in whole[0])
    assert whole[1] == resumed[1]
    losses = [entry for entry in whole[1] if "loss" in entry]
    assert len(losses) == 6 and all(any(k.startswith("loss/") for k in entry) for entry in losses)
    assert whole[2] == resumed[2]


def test_the_stream_started_afresh_differs(runs, tmp_path):
    """Negative control: the same resume with `--ignore_data_skip true` (the task stream starts from its beginning)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["killed"] / "checkpoint-4", copy / "checkpoint-4")
    argv = ["--config", str(runs["preset"]), *SAVE, "--output_dir", str(copy), "--ignore_data_skip", "true"]
    assert main([*argv, "--resume_from_checkpoint", str(copy / "checkpoint-4")]) == 0
    whole, afresh = _outcome(runs["root"] / "whole"), _outcome(copy)
    assert whole[1] != afresh[1]
    assert any(not (whole[0][k] == afresh[0][k]).all() for k in whole[0])


def test_a_checkpoint_holds_the_joint_runs_fingerprint(runs):
    run = json.loads((runs["killed"] / "checkpoint-2" / "mmft_run.json").read_text())
    assert set(run["fingerprint"]["tasks"]) == {"vqa", "classification", "retrieval"}
