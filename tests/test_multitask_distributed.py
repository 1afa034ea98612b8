"""A multi-task run trains alike on 2 processes x 4 and 1 process x 8, checked with real processes on the CPU (issue 30:
"under DDP every process draws the same task at each step, so 2 processes equal 1 with the doubled batch").

recipes/multitask.py on VQA, classification and retrieval (tiny towers, tests/helpers_multitask_run.py): a real
`accelerate launch` of 2 gloo processes (accelerate_configs/multi_gpu.yaml) against the same run in this process, on
one thread like a launched process. Temperature sampling, so which task a step draws is random; each step must draw
the same task in both layouts (the `loss/<task>` key of each step's log) with the same loss, and both must end with
the same weights (within 1e-5). Retrieval contrasts each process's rows with every process's (gather_negatives), so
its steps match only if the gather does. Dropout is 0 and the task streams always cut full global batches.

A step trains one task's head, so the other heads get no gradient: with gradient checkpointing (where the Trainer no
longer asks DDP to look for unused parameters) DDP stopped at the second step until the joint run asked for it
(`find_unused_head_parameters`); the 2-process run with gradient checkpointing trains and matches.

Negative control: 1 process x 4 (half the global batch: the same tasks drawn, other rows per step) logs other losses
and ends with weights far outside the tolerance, so the comparison sees a changed batch.

The same runs carry the per-task throughput: each training log has `perf/<task>/samples_per_second` and
`perf/<task>/step_seconds` for the task its step trained.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers_launch import ACCELERATE, REPO, free_port, log_history, max_abs_diff, run_recipe, save_tiny_text_tower
from helpers_launch import weights as load_weights
from helpers_multitask_run import make_task_data, write_preset

from mmft.multitask_training import main

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_cpu_thread")]
STEPS, TOLERANCE = 6, 1e-5
TASK_NAMES = {"vqa", "classification", "retrieval"}


def _launch(preset: Path, output_dir: Path, *extra: str) -> str:
    command = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(REPO / "accelerate_configs" / "multi_gpu.yaml"),
        "--main_process_port",
        str(free_port()),
        "--num_processes",
        "2",
        "--num_cpu_threads_per_process",
        "1",
        str(REPO / "recipes" / "multitask.py"),
        "--config",
        str(preset),
        "--per_device_train_batch_size",
        "4",
        "--output_dir",
        str(output_dir),
        *extra,
    ]
    result = run_recipe(command)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mt_ddp")
    text = save_tiny_text_tower(root / "bert", dropout=0.0)
    data = make_task_data(root / "data")  # 16 rows per task: whole global batches of 8
    preset = write_preset(
        root / "tasks.yaml",
        text,
        data,
        root / "unused",
        task_sampling="temperature",
        max_steps=STEPS,
        save_strategy="steps",
        save_steps=STEPS,
    )
    out = {"2 x 4": root / "two", "2 x 4, gradient checkpointing": root / "two_gc"}
    printed = _launch(preset, out["2 x 4"])
    assert "DDP looks for unused parameters" in printed
    _launch(preset, out["2 x 4, gradient checkpointing"], "--gradient_checkpointing", "true")
    for name, batch in (("1 x 8", "8"), ("1 x 4", "4")):
        out[name] = root / name.replace(" ", "")
        argv = ["--config", str(preset), "--per_device_train_batch_size", batch, "--output_dir", str(out[name])]
        assert main(argv) == 0
    return out


def _steps(output_dir: Path) -> list[dict]:
    """Each optimizer step's training log (timings left out)."""
    history = [entry for entry in log_history(output_dir / f"checkpoint-{STEPS}") if "loss" in entry]
    assert len(history) == STEPS
    return history


def _task(entry: dict) -> str:
    (name,) = [key[len("loss/") :] for key in entry if key.startswith("loss/")]  # one task per step
    return name


def _same(a: float, b: float, tolerance: float = TOLERANCE) -> bool:
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


@pytest.mark.parametrize("layout", ["2 x 4", "2 x 4, gradient checkpointing"])
def test_two_processes_train_like_one_with_the_doubled_batch(runs, layout):
    one, two = _steps(runs["1 x 8"]), _steps(runs[layout])
    assert {_task(entry) for entry in one} == TASK_NAMES  # every task, retrieval's gathered negatives included
    for step, (a, b) in enumerate(zip(one, two, strict=True), start=1):
        task = _task(a)
        assert _task(b) == task, f"step {step}: {task} on 1 process, {_task(b)} on 2"
        assert _same(a[f"loss/{task}"], b[f"loss/{task}"]), f"step {step} ({task}): {a} vs {b}"
        assert _same(a["grad_norm"], b["grad_norm"]), f"step {step} ({task}): {a} vs {b}"
        assert _same(a["loss"], b["loss"]), f"step {step}"
    one_weights = load_weights(runs["1 x 8"] / "model.safetensors")
    diff = max_abs_diff(one_weights, load_weights(runs[layout] / "model.safetensors"))
    print(f"multi-task: {layout} vs 1 x 8: max |weight diff| = {diff:.2e}")
    assert diff <= TOLERANCE


def test_half_the_global_batch_differs(runs):
    """Negative control: 1 process x 4 draws the same tasks but trains on other rows."""
    one, half = _steps(runs["1 x 8"]), _steps(runs["1 x 4"])
    assert [_task(entry) for entry in one] == [_task(entry) for entry in half]
    assert not _same(one[0][f"loss/{_task(one[0])}"], half[0][f"loss/{_task(half[0])}"])
    one_weights = load_weights(runs["1 x 8"] / "model.safetensors")
    diff = max_abs_diff(one_weights, load_weights(runs["1 x 4"] / "model.safetensors"))
    print(f"negative control (1 x 4): max |weight diff| = {diff:.2e}")
    assert diff > 100 * TOLERANCE


@pytest.mark.parametrize("layout", ["1 x 8", "2 x 4"])
def test_throughput_is_reported_per_task(runs, layout):
    state = json.loads((runs[layout] / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    entries = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(entries) == STEPS
    for entry in entries:  # one step per log: its task's figures alone, which are the step's figures
        task = _task(entry)
        per_task = {key for key in entry if key.count("/") == 2 and key.startswith("perf/")}
        assert per_task == {f"perf/{task}/samples_per_second", f"perf/{task}/step_seconds"}, entry
        assert entry[f"perf/{task}/samples_per_second"] > 0 and entry[f"perf/{task}/step_seconds"] > 0
        assert _same(entry[f"perf/{task}/samples_per_second"], entry["perf/samples_per_second"], 1e-6)
        assert _same(entry[f"perf/{task}/step_seconds"], entry["perf/step_seconds"], 1e-6)
