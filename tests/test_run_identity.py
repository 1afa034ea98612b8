"""A checkpoint and a rejects ledger belong to one run: resuming never picks up another run's state.

`--resume_from_checkpoint auto` used to resume whatever was newest in output_dir: a run with other answers resumed
another run's checkpoint without a word (a silent label permutation), and another head size gave a raw shape
error. The rejects ledger (`rejects.jsonl`) was kept on every resume and read line by line: a line torn by a kill
broke every later run, and an older run's rejects counted toward `--max_bad_fraction` and excluded eval rows.
Every run here goes through `mmft.training.run` in this process, on tiny towers.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from helpers_data import make_imagefolder
from helpers_launch import StepRecorder, recipe_argv, save_tiny_text_tower

from mmft.arguments import parse_recipe_args
from mmft.data import BadExample, BadExamplePolicy
from mmft.training import run

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
ARGS = [
    "--per_device_train_batch_size",
    "4",
    "--max_steps",
    "4",
    "--save_strategy",
    "steps",
    "--save_steps",
    "2",
    "--seed",
    "0",
    "--plots",
    "false",
    "--model_card",
    "false",
    "--throughput",
    "false",
    "--lora_text",
    "full",
]


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    return save_tiny_text_tower(tmp_path_factory.mktemp("identity_text") / "bert", dropout=0.0)


def _relabel(source: Path, target: Path, mapping: dict[str, str]) -> Path:
    """A copy of an imagefolder dataset with answers renamed (`mapping`), images shared."""
    shutil.copytree(source, target)
    for metadata in target.glob("*/metadata.jsonl"):
        rows = [json.loads(line) for line in metadata.read_text().splitlines()]
        for row in rows:
            row["answers"] = [mapping.get(a, a) for a in row["answers"]]
        metadata.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return target


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("identity_data")
    original = make_imagefolder(root / "original")
    return {
        "original": original,
        "other answers, same count": _relabel(original, root / "green", {"red": "green"}),
        "fewer answers": _relabel(original, root / "three", {"no": "yes"}),
    }


def run_vqa(output_dir: Path, text_dir: Path, data: Path, *extra: str, callbacks: list | None = None) -> dict:
    return run("vqa", parse_recipe_args(recipe_argv(output_dir, text_dir, data, *ARGS, *extra), "vqa"), callbacks)


@pytest.fixture(scope="module")
def reference(datasets, text_dir, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("identity_reference")
    run_vqa(output_dir, text_dir, datasets["original"])
    return output_dir


def _with_checkpoint(reference: Path, target: Path) -> Path:
    shutil.copytree(reference / "checkpoint-2", target / "checkpoint-2")
    return target


# -- the run fingerprint --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, differs", [("other answers, same count", "labels"), ("fewer answers", "labels")])
def test_auto_refuses_the_checkpoint_of_another_run_naming_what_differs(
    data, differs, datasets, text_dir, reference, tmp_path
):
    output_dir = _with_checkpoint(reference, tmp_path / "out")
    with pytest.raises(ValueError, match="belongs to another run") as caught:
        run_vqa(output_dir, text_dir, datasets[data], "--resume_from_checkpoint", "auto")
    message = str(caught.value)
    assert differs in message and "dataset" in message, message
    assert "--overwrite_output_dir" in message and "--output_dir" in message, message
    assert not (output_dir / "model.safetensors").exists()


def test_overwrite_output_dir_starts_afresh_over_another_runs_checkpoints(datasets, text_dir, reference, tmp_path):
    output_dir = _with_checkpoint(reference, tmp_path / "out")
    run_vqa(
        output_dir,
        text_dir,
        datasets["other answers, same count"],
        "--resume_from_checkpoint",
        "auto",
        "--overwrite_output_dir",
        "true",
    )
    state = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert [row["step"] for row in state["log_history"] if "loss" in row] == [1, 2]  # trained from step 0 again
    config = json.loads((output_dir / "config.json").read_text())
    assert "green" in config["id2label"].values()


def test_the_same_run_resumes(datasets, text_dir, reference, tmp_path, caplog):
    """Resumed, not restarted: a restart from scratch also ends with steps 1-4 in checkpoint-4's log, so the run must
    say which checkpoint it resumes and train only the steps after it."""
    output_dir = _with_checkpoint(reference, tmp_path / "out")  # resumed by its folder path (`auto`: above)
    checkpoint = output_dir / "checkpoint-2"
    trained = StepRecorder()
    with caplog.at_level(logging.WARNING):
        run_vqa(
            output_dir, text_dir, datasets["original"], "--resume_from_checkpoint", str(checkpoint), callbacks=[trained]
        )
    assert f"resuming from {checkpoint}" in caplog.text
    assert trained.steps == [3, 4]  # steps 1-2 were not trained again
    state = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert [row["step"] for row in state["log_history"] if "loss" in row] == [1, 2, 3, 4]  # 1-2 from the checkpoint


# -- the rejects ledger ---------------------------------------------------------------------------------------------
def _ledger_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line must parse


def test_a_torn_last_ledger_line_is_ignored_and_never_glued_to(tmp_path):
    ledger = tmp_path / "rejects.jsonl"
    whole = {"split": "train", "row": 3, "file": "3.png", "reason": "cannot read image", "stage": "validation"}
    ledger.write_text(json.dumps(whole) + "\n" + '{"split": "train", "row": 5, "fi')  # a kill mid-write
    policy = BadExamplePolicy("skip", 0.5, str(ledger), "data")
    assert set(policy.rejected("train")) == {3}
    policy.handle(BadExample("train", 7, "7.png", "cannot decode image", "decode"))
    assert set(policy.rejected("train")) == {3, 7}
    assert json.loads(ledger.read_text().splitlines()[-1])["row"] == 7  # a whole line, not glued to the fragment


STALE = [  # what an older run in the same output_dir left: 6 of 24 train rows and 4 eval rows
    *(
        {"split": "train", "row": r, "file": f"{r}.png", "reason": "cannot read image", "stage": "validation"}
        for r in range(6)
    ),
    *(
        {"split": "eval", "row": r, "file": f"{r}.png", "reason": "cannot decode image", "stage": "decode"}
        for r in range(4)
    ),
]


def test_an_older_runs_rejects_are_not_counted_by_a_fresh_start(datasets, text_dir, tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "rejects.jsonl").write_text("".join(json.dumps(line) + "\n" for line in STALE))
    # `auto` finds no checkpoint: a fresh start, which must not inherit the ledger
    metrics = run_vqa(
        output_dir,
        text_dir,
        datasets["original"],
        "--on_bad_example",
        "skip",
        "--max_bad_fraction",
        "0.1",
        "--resume_from_checkpoint",
        "auto",
    )
    assert metrics.get("test_excluded_bad_rows", 0) == 0
    assert not (output_dir / "rejects.jsonl").exists() or not (output_dir / "rejects.jsonl").read_text().strip()


def test_a_resumed_run_counts_only_its_own_rejects(datasets, text_dir, reference, tmp_path):
    output_dir = _with_checkpoint(reference, tmp_path / "out")
    (output_dir / "rejects.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in STALE) + '{"split": "eval", "row": 7, "fi'  # torn by a kill
    )
    metrics = run_vqa(
        output_dir,
        text_dir,
        datasets["original"],
        "--on_bad_example",
        "skip",
        "--max_bad_fraction",
        "0.1",
        "--resume_from_checkpoint",
        "auto",
    )
    assert metrics.get("test_excluded_bad_rows", 0) == 0
    assert _ledger_lines(output_dir / "rejects.jsonl") == []  # the older run's lines and the torn one are gone
