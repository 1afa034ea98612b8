"""Exact resume and safe checkpoints, with real processes killed by SIGKILL.

A run killed part-way and restarted with `--resume_from_checkpoint` (a folder, `auto` or `latest`) must end
bit-identical in fp32 to an uninterrupted run: full vision tower, text LoRA adapters, bridge and head, optimizer,
scheduler, RNG states, per-step losses, eval and test metrics. Dropout is on everywhere (bridge, LoRA, text tower), so
a lost RNG state or a changed data order shows. A kill while a checkpoint is written, or a half-written newest
checkpoint, must never be resumed from; `save_total_limit` must hold.
"""

from __future__ import annotations

import json
import logging
import shutil
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers_data import make_imagefolder
from helpers_launch import (
    StepRecorder,
    final_metrics,
    kill_when,
    log_history,
    logged_steps,
    recipe_argv,
    recipe_command,
    run_in_process,
    run_recipe,
    save_tiny_text_tower,
    save_tiny_vision_tower,
    weights,
)
from helpers_multi_run import MULTI_RUN, RUN_SEPARATOR, run_outputs, when_run
from transformers import TrainerCallback
from transformers.trainer_pt_utils import safe_globals

from mmft.checkpoints import latest_complete_checkpoint, resolve_resume_checkpoint

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_cpu_thread")]
STEPS, SAVE_EVERY, LIMIT = 12, 3, 2  # 24 rows / batch 4 = 6 steps per epoch: resumes land mid-epoch and across it
ARGS = [
    "--lora_vision",
    "full",
    "--lora_text",
    "lora",
    "--lora_r",
    "4",
    "--lora_dropout",
    "0.1",
    "--hidden_dropout",
    "0.1",
    "--per_device_train_batch_size",
    "4",
    "--max_steps",
    str(STEPS),
    "--save_strategy",
    "steps",
    "--save_steps",
    str(SAVE_EVERY),
    "--save_total_limit",
    str(LIMIT),
    "--eval_strategy",
    "steps",
    "--eval_steps",
    "6",
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume_inputs")
    return save_tiny_text_tower(root / "bert", dropout=0.1), make_imagefolder(root / "data")


def _checkpoint_names(output_dir: Path) -> set[str]:
    return {p.name for p in output_dir.glob("checkpoint-*")}


def _half_written_copy(source: Path, target: Path) -> None:
    """What a kill during a save leaves: weights cut short, no optimizer state, no trainer_state.json yet."""
    target.mkdir()
    data = (source / "adapter_model.safetensors").read_bytes()
    (target / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    shutil.copy(source / "adapter_config.json", target)


def _assert_same_tensors(a, b, where: str) -> None:
    """Recursive bit-equality of two loaded state objects (dicts, lists, tensors, numbers, numpy states)."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert repr(a) == repr(b), where  # numbers, strings, numpy RNG arrays


def _assert_bit_equal_runs(resumed: Path, reference: Path) -> None:
    final = f"checkpoint-{STEPS}"
    for name in ("model.safetensors", f"{final}/adapter_model.safetensors"):
        ours, theirs = weights(resumed / name), weights(reference / name)
        assert ours.keys() == theirs.keys()
        unequal = [key for key in ours if not torch.equal(ours[key], theirs[key])]
        assert not unequal, f"{name}: {len(unequal)} tensors differ, e.g. {unequal[:3]}"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        with safe_globals():  # the numpy RNG state needs numpy types allow-listed, as the Trainer does
            ours, theirs = (torch.load(root / final / name, weights_only=True) for root in (resumed, reference))
            _assert_same_tensors(ours, theirs, name)
    assert log_history(resumed / final) == log_history(reference / final)  # losses, grad norms, lr, eval metrics
    assert final_metrics(resumed) == final_metrics(reference)
    assert _checkpoint_names(resumed) == _checkpoint_names(reference) == {f"checkpoint-{STEPS - SAVE_EVERY}", final}


KILLS = {
    # name: (kill moment in the run's output dir and printed output, how to resume)
    "while checkpoint-6 is being written": (lambda out, printed: (out / "checkpoint-6").exists(), "auto"),
    # A folder path loads like `auto` once the folder is chosen (test_run_identity.py's test_the_same_run_resumes
    # resumes by path), so the second kill, after a step, resumes with `latest` past a half-written newer checkpoint.
    "after step 10, half-written newer checkpoint": (lambda out, printed: logged_steps(printed) >= 10, "latest"),
}


@pytest.fixture(scope="module")
def runs(inputs, tmp_path_factory, one_cpu_thread) -> dict:
    """The uninterrupted reference run, and for each kill a run killed at that moment and resumed.

    Two launches rather than five (every launch spends ~13 s importing): the reference run, then in the same
    processes the first run to kill; the first resume (in fresh processes), then the second run to kill. The second
    resume runs in this process.
    {"reference": output_dir, kill: (output_dir, the checkpoint resumed from, how many steps the resume trained)}.
    """
    root = tmp_path_factory.mktemp("resume_runs")
    reference = root / "reference"
    killed: dict[str, tuple[Path, Path]] = {}  # kill: (output_dir, the checkpoint resumed from)
    trained: dict[str, int] = {}  # kill: how many steps its resume trained
    first = recipe_command(reference, *inputs, *ARGS, script=MULTI_RUN)
    resumed_before = None  # the kill whose resume is the first run of the next launch
    for number, (kill, (moment, mode)) in enumerate(KILLS.items()):
        output_dir, log = root / f"killed{number}", root / f"launch{number}.log"
        command = [*first, RUN_SEPARATOR, *recipe_argv(output_dir, *inputs, *ARGS)]
        kill_when(command, log, when_run(1, partial(moment, output_dir)))
        assert not (output_dir / "model.safetensors").exists(), f"{kill}: the run finished before the kill"
        if resumed_before:
            trained[resumed_before] = logged_steps(run_outputs(log.read_text())[0])
        resume_from, _ = latest_complete_checkpoint(output_dir)
        assert resume_from is not None, f"{kill}: no complete checkpoint: {sorted(_checkpoint_names(output_dir))}"
        if mode == "latest":
            step = int(resume_from.name.split("-")[1])
            _half_written_copy(resume_from, output_dir / f"checkpoint-{step + SAVE_EVERY}")
        print(f"{kill}: killed with {sorted(_checkpoint_names(output_dir))}; resuming from {resume_from.name}")
        killed[kill], resumed_before = (output_dir, resume_from), kill
        first = recipe_command(output_dir, *inputs, *ARGS, "--resume_from_checkpoint", mode, script=MULTI_RUN)
    recorder = StepRecorder()
    run_in_process(
        killed[resumed_before][0],
        *inputs,
        *ARGS,
        "--resume_from_checkpoint",
        KILLS[resumed_before][1],
        callbacks=[recorder],
    )
    trained[resumed_before] = len(recorder.steps)
    return {"reference": reference, **{kill: (*killed[kill], trained[kill]) for kill in KILLS}}


@pytest.fixture(scope="module")
def reference(runs) -> Path:
    return runs["reference"]


@pytest.mark.parametrize("kill", KILLS)
def test_killed_run_resumes_bit_identically(kill, runs):
    output_dir, resume_from, trained_steps = runs[kill]
    assert trained_steps == STEPS - int(resume_from.name.split("-")[1])  # it resumed, not restarted
    _assert_bit_equal_runs(output_dir, runs["reference"])
    if KILLS[kill][1] == "latest":  # the half-written newer checkpoint was set aside, not resumed from
        step = int(resume_from.name.split("-")[1]) + SAVE_EVERY
        assert (output_dir / f"incomplete-checkpoint-{step}").is_dir()


def test_reference_keeps_safetensors_checkpoints_within_the_limit(reference):
    assert _checkpoint_names(reference) == {f"checkpoint-{STEPS - SAVE_EVERY}", f"checkpoint-{STEPS}"}
    for checkpoint in reference.glob("checkpoint-*"):
        assert (checkpoint / "adapter_model.safetensors").is_file()
        assert not list(checkpoint.glob("*model*.bin"))  # weights only as safetensors (training_args.bin is HF's)


BREAKAGES = {
    "no trainer_state.json": lambda c: (c / "trainer_state.json").unlink(),
    "truncated trainer_state.json": lambda c: (c / "trainer_state.json").write_text('{"global_step": 12, "log_hi'),
    "truncated weights": lambda c: (c / "adapter_model.safetensors").write_bytes(
        (c / "adapter_model.safetensors").read_bytes()[:-64]
    ),
    "truncated optimizer.pt": lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:100]),
    "no RNG state": lambda c: (c / "rng_state.pth").unlink(),
    "no weights": lambda c: (c / "adapter_model.safetensors").unlink(),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_broken_newest_checkpoint_is_never_picked(breakage, reference, tmp_path):
    output_dir = tmp_path / "run"
    for checkpoint in reference.glob("checkpoint-*"):
        shutil.copytree(checkpoint, output_dir / checkpoint.name)
    newest, previous = output_dir / f"checkpoint-{STEPS}", output_dir / f"checkpoint-{STEPS - SAVE_EVERY}"
    assert latest_complete_checkpoint(output_dir)[0] == newest
    BREAKAGES[breakage](newest)

    chosen, skipped = latest_complete_checkpoint(output_dir)
    assert chosen == previous and list(skipped) == [newest]
    with pytest.raises(ValueError, match="cannot be resumed from"):
        resolve_resume_checkpoint(str(newest), output_dir)
    assert resolve_resume_checkpoint("auto", output_dir) == str(previous)
    assert not newest.exists() and (output_dir / f"incomplete-checkpoint-{STEPS}").is_dir()
    assert json.loads((previous / "trainer_state.json").read_text())["global_step"] == STEPS - SAVE_EVERY


# -- resuming on another number of processes -----------------------------------------------------------------------
# An HF ViT folder tower with full fine-tuning, so checkpoints hold the ViT under the names transformers renames
# (bit-equal resumes of every tower family are in tests/test_resume_families.py). 1-process runs go through the same
# `mmft.training.run` in this process, on one thread like a launched process; the 2- and 3-process runs are launched.
VIT_STEPS = 12
VIT_ARGS = [
    "--lora_vision",
    "full",
    "--lora_text",
    "full",
    "--hidden_dropout",
    "0.1",
    "--max_steps",
    str(VIT_STEPS),
    "--save_strategy",
    "steps",
    "--save_steps",
    "3",
    "--save_total_limit",
    "4",
    "--seed",
    "0",
]
BATCH = {1: "4", 2: "2", 3: "2"}  # per-device batch by process count: 1 and 2 processes share the global batch of 4


class Interrupted(RuntimeError):
    pass


class Interrupt(TrainerCallback):
    """End the run after `step` (as a kill would, but in this process): nothing after it is saved."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted(f"interrupted after step {self.step}")


@pytest.fixture(scope="module")
def vit_inputs(inputs, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(text tower, data, HF ViT tower folder)."""
    vision = save_tiny_vision_tower(tmp_path_factory.mktemp("vit") / "vit", "hf_vit", dropout=0.1)
    return (*inputs, vision)


def _vit_flags(processes: int, *extra: str) -> list[str]:
    return [*VIT_ARGS, "--per_device_train_batch_size", BATCH[processes], *extra]


def _resume(output_dir: Path, processes: int, vit_inputs, caplog) -> str:
    """Resume `output_dir` with `auto` on `processes` processes; returns what the run said."""
    text, data, vision = vit_inputs
    flags = _vit_flags(processes, "--resume_from_checkpoint", "auto")
    if processes == 1:
        with caplog.at_level(logging.WARNING):
            run_in_process(output_dir, text, data, *flags, vision=str(vision))
        return caplog.text
    result = run_recipe(recipe_command(output_dir, text, data, *flags, processes=processes, vision=str(vision)))
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def grown(vit_inputs, tmp_path_factory, one_cpu_thread) -> tuple[Path, str]:
    """A 1-process run stopped after step 8, resumed with `auto` on 2 processes (which write 2-process checkpoints)."""
    text, data, vision = vit_inputs
    output_dir = tmp_path_factory.mktemp("grown") / "run"
    with pytest.raises(Interrupted):
        run_in_process(output_dir, text, data, *_vit_flags(1), vision=str(vision), callbacks=[Interrupt(8)])
    assert not (output_dir / "model.safetensors").exists()
    return output_dir, _resume(output_dir, 2, vit_inputs, None)


def _assert_continued(output_dir: Path, output: str, step: int, lost: str) -> None:
    assert "starting from scratch" not in output and not list(output_dir.glob("incomplete-*")), output[-3000:]
    assert f"resuming from {output_dir / f'checkpoint-{step}'}" in output, output[-3000:]
    assert "missing keys" not in output and "unexpected keys" not in output, output[-3000:]
    history = json.loads((output_dir / f"checkpoint-{VIT_STEPS}" / "trainer_state.json").read_text())["log_history"]
    assert [row["step"] for row in history if "loss" in row] == list(range(1, VIT_STEPS + 1))  # none trained twice
    assert lost in output, output[-3000:]  # says which RNG states it could not restore
    assert (output_dir / "model.safetensors").is_file()


def test_checkpoint_of_one_process_resumes_on_two(grown):
    output_dir, output = grown
    _assert_continued(output_dir, output, 6, "RNG state not restored for process 0, 1 of 2")
    assert {p.name for p in (output_dir / "checkpoint-9").glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}


@pytest.mark.parametrize(
    "processes, lost",
    [(1, "RNG state not restored for process 0 of 1"), (3, "RNG state not restored for process 2 of 3")],
)
def test_checkpoint_of_two_processes_resumes_on_another_count(processes, lost, grown, vit_inputs, tmp_path, caplog):
    output_dir = tmp_path / "run"
    shutil.copytree(grown[0] / "checkpoint-9", output_dir / "checkpoint-9")
    _assert_continued(output_dir, _resume(output_dir, processes, vit_inputs, caplog), 9, lost)
