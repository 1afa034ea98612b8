"""recipes/multitask.py end to end on tiny towers and tiny data in users' layouts (issue 30): a joint run of VQA,
classification and retrieval writes each task's own model (its Auto class, pipeline and `mmft predict` load it, and
answer as the joint model's `for_task` does) and the joint model with every task's results; loss weights, per-task
overrides and preset mistakes; a task defined in this file joins a run by `register_task` alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers_launch import TIMING_KEYS
from helpers_multitask_run import make_task_data, write_preset
from safetensors.torch import load_file
from test_register_task import AutoModelForClaimChecking, ClaimCheckingTask, MMFTForClaimChecking
from transformers import pipeline

from mmft import TASKS, MMFTForMultiTask, MMFTProcessor, register_task
from mmft.cli import main as mmft_main
from mmft.multitask_training import main, parse_multitask_args
from mmft.tasks import get_task

pytestmark = pytest.mark.e2e
TASK_NAMES = ("vqa", "classification", "retrieval")
TEXT = {"vqa": "what color is the shape?", "classification": "the square is red", "retrieval": "a red square"}


def _untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not any(k.endswith(t[len("test") :]) for t in TIMING_KEYS)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_task_data(tmp_path_factory.mktemp("mt_data"))


@pytest.fixture(scope="module")
def joint(tmp_path_factory, tiny_text_dir, data, one_cpu_thread):
    root = tmp_path_factory.mktemp("mt_joint")
    preset = write_preset(root / "tasks.yaml", tiny_text_dir, data, root / "out")
    argv = ["--config", str(preset), "--retrieval.max_text_length", "24", "--learning_rate", "2e-3"]
    assert main(argv) == 0
    return {"out": root / "out", "argv": argv, "preset": preset}


def test_joint_results_are_each_task_folders_own(joint):
    out = joint["out"]
    results = json.loads((out / "test_results.json").read_text())
    for task in TASK_NAMES:
        own = json.loads((out / task / "test_results.json").read_text())
        prefixed = {
            k.replace(f"test_{task}_", "test_", 1): v for k, v in results.items() if k.startswith(f"test_{task}_")
        }
        assert prefixed and _untimed(prefixed) == _untimed(own), task
    card = (out / "README.md").read_text()
    assert all(f"| {task} |" in card for task in TASK_NAMES)
    rows = [line for line in card.splitlines() if line.startswith(tuple(f"| {task} |" for task in TASK_NAMES))]
    assert len(rows) == 3 and all("accuracy" in row or "recall@1" in row for row in rows)
    assert not any(timing in card for timing in ("runtime", "per_second", "seconds", "preparation_time"))


def test_each_task_folder_loads_and_answers_as_the_joint_models_for_task(joint, data, capsys):
    out = joint["out"]
    model = MMFTForMultiTask.from_pretrained(out)
    model.eval()
    image = str(data["vqa"] / "test" / "0.png")
    for task in TASK_NAMES:
        loaded = get_task(task).auto_class.from_pretrained(out / task)
        assert type(loaded) is get_task(task).model_class
        own = pipeline(get_task(task).pipeline_task, model=str(out / task))
        assert isinstance(own, get_task(task).pipeline_class)
        processor = MMFTProcessor.from_pretrained(out / task)
        pipe = get_task(task).pipeline_class(model=model.for_task(task), processor=processor)
        text = {pipe.text_key: TEXT[task]} if pipe.text_key else {}
        expected = list(pipe.cli_lines(pipe(image, **text)))
        capsys.readouterr()
        assert mmft_main(["predict", "--model", str(out / task), "--image", image, "--text", TEXT[task]]) == 0
        assert capsys.readouterr().out.strip().splitlines() == expected, task


def test_run_config_replays_the_same_flags(joint, tmp_path):
    replayed = parse_multitask_args(["--config", str(joint["out"] / "run_config.yaml")])
    original = parse_multitask_args(joint["argv"])
    assert replayed.flags == original.flags
    assert replayed.multitask == original.multitask
    for a, b in zip(replayed.parts, original.parts, strict=True):
        assert (a.name, a.weights) == (b.name, b.weights)
        assert a.args.model == b.args.model and a.args.data == b.args.data and a.args.task == b.args.task
        assert a.args.training.to_dict() == b.args.training.to_dict()
    assert original.parts[2].args.model.max_text_length == 24  # the override is in the replayed file
    assert replayed.shared.training.learning_rate == 2e-3


def test_a_task_override_reaches_that_task_only(data, tiny_text_dir, tmp_path):
    preset = write_preset(tmp_path / "tasks.yaml", tiny_text_dir, data, tmp_path / "out")
    parsed = parse_multitask_args(["--config", str(preset), "--vqa.per_device_train_batch_size", "2"])
    sizes = {p.name: p.args.training.per_device_train_batch_size for p in parsed.parts}
    assert sizes == {"vqa": 2, "classification": 4, "retrieval": 4}
    assert parsed.shared.training.per_device_train_batch_size == 4
    shared = parse_multitask_args(["--config", str(preset), "--per_device_train_batch_size", "3"])
    assert {p.args.training.per_device_train_batch_size for p in shared.parts} == {3}


@pytest.mark.parametrize(
    ("tasks", "argv", "named"),
    [
        ({"vqa": {}, "nosuchtask": {}}, [], "tasks.nosuchtask"),
        ({"vqa": {"no_such_flag": 1}}, [], "tasks.vqa"),
        ({"vqa": {"loss_weight": -1}}, [], "loss_weight"),
        ({"vqa": {"loss_weight": "heavy"}}, [], "tasks.vqa: loss_weight"),
        ({"vqa": {}}, ["--captioning.max_steps", "3"], "--captioning.<flag>"),
        ({"vqa": {}}, ["--vqa.loss_weight", "-2"], "--vqa.<weight>: loss_weight"),
    ],
)
def test_a_mistake_exits_2_with_one_sentence_naming_it(tasks, argv, named, data, tiny_text_dir, tmp_path, capsys):
    tasks = {name: {"dataset": str(data.get(name, data["vqa"])), **entry} for name, entry in tasks.items()}
    preset = write_preset(tmp_path / "tasks.yaml", tiny_text_dir, data, tmp_path / "out", tasks=tasks)
    assert main(["--config", str(preset), *argv]) == 2
    error = capsys.readouterr().err
    assert named in error and "Traceback" not in error and error.count("\n") == 1, error
    assert str(preset) in error or argv, error
    assert not (tmp_path / "out").exists()  # refused before anything is written


def _heads(path: Path, task: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path / "model.safetensors")).items() if k.startswith(f"heads.{task}.")}


def test_loss_weight_zero_leaves_its_head_untouched(data, tiny_text_dir, tmp_path, one_cpu_thread):
    tasks = {name: {"dataset": str(data[name])} for name in ("vqa", "classification")}
    tasks["classification"]["loss_weight"] = 0
    preset = write_preset(tmp_path / "tasks.yaml", tiny_text_dir, data, tmp_path / "init", tasks=tasks)
    assert main(["--config", str(preset), "--eval_only", "true"]) == 0  # the initial weights, saved untrained
    assert main(["--config", str(preset), "--output_dir", str(tmp_path / "zero")]) == 0
    # negative control: the same run with weight 1 moves the head
    assert (
        main(["--config", str(preset), "--classification.loss_weight", "1", "--output_dir", str(tmp_path / "one")]) == 0
    )
    init = _heads(tmp_path / "init", "classification")
    zero, one = _heads(tmp_path / "zero", "classification"), _heads(tmp_path / "one", "classification")
    assert init and all(torch.equal(init[k], zero[k]) for k in init)
    assert any(not torch.equal(init[k], one[k]) for k in init)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(_heads(tmp_path / "init", "vqa").values(), _heads(tmp_path / "zero", "vqa").values())
    )


@pytest.fixture
def claim_checking():
    register_task(ClaimCheckingTask)
    yield
    TASKS.pop(ClaimCheckingTask.name)


def test_a_task_defined_in_this_file_joins_a_multitask_run(
    claim_checking, data, tiny_text_dir, tmp_path, one_cpu_thread
):
    tasks = {"vqa": {"dataset": str(data["vqa"])}, "claim_checking": {"dataset": str(data["classification"])}}
    preset = write_preset(tmp_path / "tasks.yaml", tiny_text_dir, data, tmp_path / "init", tasks=tasks)
    assert main(["--config", str(preset), "--eval_only", "true"]) == 0
    assert main(["--config", str(preset), "--output_dir", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    init, trained = _heads(tmp_path / "init", "claim_checking"), _heads(out, "claim_checking")
    assert init and any(not torch.equal(init[k], trained[k]) for k in init)  # its head trained
    results = json.loads((out / "test_results.json").read_text())
    assert "test_claim_checking_accuracy" in results
    assert type(AutoModelForClaimChecking.from_pretrained(out / "claim_checking")) is MMFTForClaimChecking
    assert "| claim_checking |" in (out / "README.md").read_text()
