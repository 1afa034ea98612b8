"""Model selection in a multi-task run (issue 30): every evaluation scores each task on its validation split (carved
from train when the data has none, and said in the log) and logs `eval_joint_score`, the mean of the tasks' main
metrics weighted by their `selection_weight` (a task of weight 0 is left out); `--load_best_model_at_end` keeps the
best checkpoint's weights, selected by `eval_joint_score` also when `--metric_for_best_model` is not given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers_launch import REPO, run_recipe
from helpers_multitask_run import make_task_data, write_preset
from safetensors.torch import load_file

from mmft.tasks import get_task

pytestmark = pytest.mark.e2e
SELECTION_WEIGHTS = {"vqa": 3.0, "classification": 1.0, "retrieval": 0.0}
STEPS, EVAL_STEPS = 6, 2


def _selection_metric(task: str) -> str:
    """The metric task `task` is selected by under default flags (its Task's `selection_metric`)."""
    cls = get_task(task)
    return cls(cls.arguments_class()).selection_metric()


def _run(root: Path, tiny_text_dir: Path, data: dict, *argv: str) -> dict:
    """A joint run evaluating and saving every EVAL_STEPS steps with --load_best_model_at_end; its output folder,
    evaluations (from the last checkpoint's trainer_state.json) and `mmft` log messages."""
    tasks = {name: {"dataset": str(data[name]), "selection_weight": w} for name, w in SELECTION_WEIGHTS.items()}
    out = root / "out"
    preset = write_preset(
        root / "tasks.yaml",
        tiny_text_dir,
        data,
        out,
        tasks=tasks,
        max_steps=STEPS,
        learning_rate=5e-3,
        eval_strategy="steps",
        eval_steps=EVAL_STEPS,
        save_strategy="steps",
        save_steps=EVAL_STEPS,
        load_best_model_at_end=True,
        validation_split_percentage=25,
    )
    # A fresh process: in a pytest-xdist worker, an in-process run after other files' runs once took another
    # trajectory (its last evaluation the worst), and the best-checkpoint test needs the one a plain run takes.
    command = [sys.executable, str(REPO / "recipes" / "multitask.py"), "--config", str(preset)]
    result = run_recipe([*command, "--retrieval.max_text_length", "24", *argv])
    log = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("mmft: ")]
    state = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if any(key.startswith("eval_") for key in entry)]
    return {"out": out, "state": state, "evaluations": evaluations, "log": log}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_task_data(tmp_path_factory.mktemp("mt_sel_data"))


@pytest.fixture(scope="module")
def selected(tmp_path_factory, tiny_text_dir, data, one_cpu_thread):
    root = tmp_path_factory.mktemp("mt_sel")
    # Lower is "better" here, so the kept checkpoint is an early one whatever the tiny run's trajectory: a run that
    # improves to its last step would keep its last weights, and the weights test could not tell them apart.
    return _run(
        root, tiny_text_dir, data, "--metric_for_best_model", "eval_joint_score", "--greater_is_better", "false"
    )


def test_validation_is_carved_from_train_for_each_task_and_logged(selected, data):
    for task, folder in data.items():
        carved = [m for m in selected["log"] if m.startswith(f"mmft: dataset '{folder}' has no validation split")]
        assert len(carved) == 1 and "carved validation (4 rows)" in carved[0], (task, selected["log"])


def test_each_evaluation_logs_every_tasks_main_metric_and_their_selection_weighted_mean(selected):
    evaluations = selected["evaluations"]
    assert [e["step"] for e in evaluations] == list(range(EVAL_STEPS, STEPS + 1, EVAL_STEPS))
    plain_means = []
    for entry in evaluations:
        main = {task: entry[f"eval_{task}_{_selection_metric(task)}"] for task in SELECTION_WEIGHTS}
        weighted = sum(SELECTION_WEIGHTS[t] * main[t] for t in main) / sum(SELECTION_WEIGHTS.values())
        assert entry["eval_joint_score"] == pytest.approx(weighted, abs=1e-9), entry
        plain_means.append(sum(main.values()) / len(main))
    # The weights matter here: the plain mean (retrieval's rsum, of weight 0, counted in) is another number.
    assert any(abs(plain - e["eval_joint_score"]) > 1e-3 for plain, e in zip(plain_means, evaluations, strict=True))


def test_the_final_model_is_the_best_checkpoints(selected):
    out, state, evaluations = selected["out"], selected["state"], selected["evaluations"]
    scores = [e["eval_joint_score"] for e in evaluations]
    best_step = evaluations[scores.index(min(scores))]["step"]  # the first of equal bests (a tie is no improvement)
    assert state["best_metric"] == min(scores)
    assert Path(state["best_model_checkpoint"]) == out / f"checkpoint-{best_step}"
    # The run must have moved past its best, else "the best checkpoint's weights" are just the last ones.
    assert best_step != STEPS, scores
    final = load_file(str(out / "model.safetensors"))
    best = load_file(str(out / f"checkpoint-{best_step}" / "model.safetensors"))
    last = load_file(str(out / f"checkpoint-{STEPS}" / "model.safetensors"))
    assert final.keys() == best.keys()
    assert all(torch.equal(final[k], best[k]) for k in final)
    assert any(not torch.equal(final[k], last[k]) for k in final)
    # Each task's single-task model is saved from the same (best) weights: its head is the joint model's.
    for task in SELECTION_WEIGHTS:
        own = load_file(str(out / task / "model.safetensors"))
        head = {k[len(f"heads.{task}.") :]: v for k, v in final.items() if k.startswith(f"heads.{task}.")}
        assert head and all(torch.equal(v, own[k]) for k, v in head.items()), task


def test_without_metric_for_best_model_the_joint_score_selects(tmp_path, tiny_text_dir, data, one_cpu_thread):
    run = _run(tmp_path, tiny_text_dir, data)
    assert "mmft: model selection by eval_joint_score on the tasks' validation splits (higher is better)" in run["log"]
    scores = [e["eval_joint_score"] for e in run["evaluations"]]
    assert run["state"]["best_metric"] == max(scores)
    best_step = run["evaluations"][scores.index(max(scores))]["step"]
    assert Path(run["state"]["best_model_checkpoint"]) == run["out"] / f"checkpoint-{best_step}"
