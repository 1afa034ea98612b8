"""Run-level hardening (docs/robustness.md): non-finite loss, unusable output_dir, bad presets, unsafe files.

The NaN-guard tests drive the real HF Trainer on a tiny random mmft model; the pickle test builds a real malicious
pickle whose payload is proven live (it runs under a plain `torch.load(weights_only=False)`).
"""

from __future__ import annotations

import os
import pathlib
import re
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_SIZE, tiny_model
from safetensors.torch import load_file
from transformers import AutoModelForVisualQuestionAnswering, Trainer, TrainerCallback, TrainingArguments

from mmft.arguments import parse_recipe_args
from mmft.guards import NonFiniteLossError, NonFiniteLossGuard, check_output_dir

REPO = Path(__file__).resolve().parents[1]


class Batches(torch.utils.data.Dataset):
    """8 fixed examples; from the `poison_from`-th fetch on, pixels are NaN (whatever order the sampler uses)."""

    def __init__(self, poison_from: int | None = None) -> None:
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        self.ids = torch.randint(1000, 2000, (8, 6), generator=generator)
        self.poison_from, self.fetched = poison_from, 0

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self.fetched += 1
        poisoned = self.poison_from is not None and self.fetched > self.poison_from
        pixels = torch.full_like(self.pixels[i], float("nan")) if poisoned else self.pixels[i]
        return {
            "pixel_values": pixels,
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(6, dtype=torch.long),
            "labels": torch.tensor(i % 4),
        }


def _trainer(output_dir: Path, data, callbacks=(), **args) -> Trainer:
    options = dict(
        per_device_train_batch_size=2,
        max_steps=8,
        save_steps=2,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        learning_rate=1e-3,
    )
    options.update(args)
    return Trainer(
        model=tiny_model(),
        args=TrainingArguments(str(output_dir), **options),
        train_dataset=data,
        callbacks=[*callbacks, NonFiniteLossGuard()],
    )


def _finite(folder: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(folder / "model.safetensors").values())


# -- NaN / inf loss -------------------------------------------------------------------------------------------------
def test_huge_learning_rate_stops_at_the_first_non_finite_loss(tmp_path):
    trainer = _trainer(tmp_path, Batches(), learning_rate=1e9, save_steps=1)
    with pytest.raises(
        NonFiniteLossError,
        match=r"training loss is (nan|-?inf) at step (\d+): stopped before this step "
        r"updated any weight",
    ) as caught:
        trainer.train()
    step = int(re.search(r"at step (\d+)", str(caught.value)).group(1))
    assert step == trainer.state.global_step + 1 and step < 8  # stopped early, at the step that went bad
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the NaN step changed nothing
    saved = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("checkpoint-*"))
    assert saved == list(range(1, step)) and f"--resume_from_checkpoint {tmp_path}/checkpoint-{step - 1}" in str(
        caught.value
    )


def test_nan_stops_keeps_the_last_good_checkpoint_and_says_how_to_resume(tmp_path):
    trainer = _trainer(tmp_path, Batches(poison_from=6))  # fetches 7-8 = step 4's batch are NaN
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.train()
    message = str(caught.value)
    checkpoint = tmp_path / "checkpoint-2"
    # the loss check itself fired (not the save-time weight check, which would also stop this run, one step later)
    assert message.startswith("training loss is nan at step 4: stopped before this step updated any weight")
    assert f"--resume_from_checkpoint {checkpoint}" in message
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"] and _finite(checkpoint)
    assert not (tmp_path / "model.safetensors").exists()
    resumed = _trainer(tmp_path, Batches(), max_steps=6)  # the hint works: resume on clean data and finish
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 6 and _finite(tmp_path / "checkpoint-6")


class _PoisonWeights(TrainerCallback):
    """Make the weights NaN right after step 2's optimizer step, with no NaN loss: the save guard must catch it."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_no_checkpoint_is_saved_with_non_finite_weights(tmp_path):
    trainer = _trainer(tmp_path, Batches(), callbacks=[_PoisonWeights()])
    with pytest.raises(NonFiniteLossError, match=r"weight tensors are NaN/inf .*checkpoint at step 2 was not saved"):
        trainer.train()
    assert not list(tmp_path.glob("checkpoint-*"))


@pytest.mark.e2e
def test_the_recipe_stops_at_a_nan_loss_and_writes_nothing_after_it(tmp_path, tiny_text_dir, one_cpu_thread):
    """The guard as the recipe wires it, run: `mmft.training.run` (what `recipes/vqa.py` runs, in this process) with a
    learning rate of 1e9 meets a NaN loss at step 2. It must stop there with the guard's message, keep the checkpoint
    saved before (finite, named in the message), and write none of the final outputs. Without the guard the run
    trains on and saves a NaN model, so this fails (checked by removing it from `make_trainer`)."""
    from helpers_data import make_imagefolder
    from helpers_launch import run_in_process

    output_dir = tmp_path / "out"
    with pytest.raises(NonFiniteLossError) as caught:
        run_in_process(
            output_dir,
            tiny_text_dir,
            make_imagefolder(tmp_path / "data"),
            "--learning_rate",
            "1e9",
            "--warmup_steps",
            "0",
            "--max_steps",
            "8",
            "--save_strategy",
            "steps",
            "--save_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
        )
    message = str(caught.value)
    match = re.match(
        r"training loss is (nan|-?inf) at step (\d+): stopped before this step updated any weight", message
    )
    assert match, message
    step = int(match.group(2))
    assert 1 < step < 8, message  # stopped early, after a first (finite) step whose checkpoint exists
    last = output_dir / f"checkpoint-{step - 1}"
    assert f"--resume_from_checkpoint {last}" in message and _finite(last)
    # nothing else: no final model, predictions, test results, card or temporary final-save folder (the preset keeps
    # one checkpoint, `save_total_limit: 1`); only the run's flags, written when it started
    assert sorted(p.name for p in output_dir.iterdir()) == [last.name, "run_config.yaml"]


# -- output_dir -----------------------------------------------------------------------------------------------------
def test_output_dir_that_is_a_file_fails_before_training(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(ValueError, match=r"--output_dir .*out is a file, not a folder"):
        check_output_dir(str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"--output_dir .*out/run is not writable \(NotADirectoryError"):
        check_output_dir(str(tmp_path / "out" / "run"))  # below a file


def test_output_dir_that_is_not_writable_fails_before_training(tmp_path):
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o500)
    else:  # root ignores permission bits; a sysfs folder is read-only even for root
        folder = Path("/sys/kernel")
        try:
            (folder / "mmft-write-test").touch()
            pytest.skip("found no read-only folder on this machine")
        except OSError:
            pass
    with pytest.raises(ValueError, match=r"--output_dir .* is not writable \((PermissionError|OSError)"):
        check_output_dir(str(folder))


def test_run_checks_output_dir_before_loading_anything(tmp_path):
    from mmft.training import run

    (tmp_path / "out").write_text("")
    args = parse_recipe_args(["--output_dir", str(tmp_path / "out"), "--dataset", str(tmp_path / "no_such_data")])
    with pytest.raises(ValueError, match="is a file, not a folder"):  # not a data error: checked first
        run("vqa", args)


# -- --config presets -----------------------------------------------------------------------------------------------
PRESETS = {
    "unknown_key": ("learning_rte: 0.1\n", r"unknown key\(s\) \['learning_rte'\]"),
    "wrong_type": (
        "num_train_epochs: two\n",
        r"argument --num_train_epochs(/--num-train-epochs)?: invalid float value: 'two'",
    ),
    "wrong_choice": (
        "on_bad_example: ignore\n",
        r"argument --on_bad_example(/--on-bad-example)?: invalid choice: 'ignore' \(choose from 'raise', 'skip'\)",
    ),
    "not_a_mapping": ("- a\n- b\n", r"expected a mapping of flag names to values, got list"),
    "python_tag": ("x: !!python/object/apply:pathlib.Path.touch [MARKER]\n", r"not a valid YAML preset"),
    "removed_flag": ("max_question_length: 32\n", r"--max_question_length was removed; use --max_text_length"),
}


@pytest.mark.parametrize("case", PRESETS)
def test_bad_preset_names_the_file_and_the_key(case, tmp_path):
    text, message = PRESETS[case]
    marker = tmp_path / "marker"
    preset = tmp_path / "preset.yaml"
    preset.write_text(text.replace("MARKER", str(marker)))
    with pytest.raises(ValueError, match=re.escape(str(preset)) + ".*" + message):
        parse_recipe_args(["--config", str(preset)])
    assert not marker.exists()  # the python/* tag was never constructed


@pytest.mark.parametrize("flag", ["--max_question_length", "--max-question-length", "--max_question_length=6"])
def test_removed_flag_names_its_replacement(flag):
    with pytest.raises(ValueError, match="^--max_question_length was removed; use --max_text_length$"):
        parse_recipe_args([flag, "6"] if "=" not in flag else [flag])


def test_max_bad_fraction_out_of_range_is_refused():
    from mmft.data import BadExamplePolicy

    with pytest.raises(ValueError, match=r"max_bad_fraction must be in \[0, 1\], got 1.5"):
        BadExamplePolicy("skip", max_bad_fraction=1.5)


# -- unsafe files ---------------------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this touches a marker file: a stand-in for arbitrary code in a downloaded pytorch_model.bin."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _write_payload(path: Path, marker: Path) -> None:
    torch.save({"weight": _Payload(marker)}, path)


def test_pickle_payload_in_a_model_folder_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    control = tmp_path / "control.bin"
    _write_payload(control, marker)
    torch.load(control, weights_only=False)  # control: the payload is live when unpickled unsafely
    assert marker.exists()
    marker.unlink()

    beside, instead = tmp_path / "beside", tmp_path / "instead"
    tiny_model().save_pretrained(beside)
    _write_payload(beside / "pytorch_model.bin", marker)  # next to model.safetensors
    tiny_model().save_pretrained(instead)
    (instead / "model.safetensors").unlink()
    _write_payload(instead / "pytorch_model.bin", marker)  # instead of it

    import mmft
    from mmft.arguments import ModelArguments
    from mmft.tasks.vqa.task import VQATask
    from mmft.training import load_saved_model

    assert type(AutoModelForVisualQuestionAnswering.from_pretrained(beside)) is mmft.MMFTForVisualQuestionAnswering
    with pytest.raises(Exception, match=r"(?i)weights_only|unpickl|safetensors"):  # mmft models: safetensors only
        AutoModelForVisualQuestionAnswering.from_pretrained(instead)
    with pytest.raises(OSError, match=r"model.safetensors"):  # mmft: safetensors only, the .bin is not even opened
        load_saved_model(VQATask(), ModelArguments(model_name_or_path=str(instead)))
    assert not marker.exists()


SOURCE_RULES = {
    "trust_remote_code": (r"trust_remote_code[\"']?\s*[=:]", "never pass trust_remote_code (keyword or dict key)"),
    "torch.load without weights_only=True": (r"torch\.load\((?![^)]*weights_only\s*=\s*True)", "weights_only=True"),
    "yaml.load / unsafe loaders": (r"yaml\.(load|unsafe_load|full_load)\(|yaml\.Loader\b", "yaml.safe_load"),
    "pickle": (r"^\s*(import|from)\s+(pickle|cloudpickle|dill)\b", "no pickle"),
    "non-safetensors saving": (r"safe_serialization\s*=\s*False|use_safetensors\s*=\s*False", "safetensors only"),
}


def source_violations(root: Path) -> dict[str, list[str]]:
    """`file:line` of every source line under `root` that breaks one of SOURCE_RULES."""
    found: dict[str, list[str]] = {rule: [] for rule in SOURCE_RULES}
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for rule, (pattern, _) in SOURCE_RULES.items():
                if re.search(pattern, line):
                    found[rule].append(f"{path.relative_to(root.parent)}:{number}")
    return found


@pytest.mark.parametrize("package", ["mmft", "recipes"])
def test_source_loads_weights_and_yaml_safely(package):
    assert not {rule: hits for rule, hits in source_violations(REPO / package).items() if hits}


def test_source_rules_catch_each_unsafe_pattern(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text(
        "import pickle\nx = torch.load(path)\ny = yaml.load(text, Loader=yaml.Loader)\n"
        "AutoModel.from_pretrained(name, trust_remote_code=True)\nkw = {'trust_remote_code': True}\n"
        "m.save_pretrained(d, safe_serialization=False)\n"
        "ok = torch.load(path, weights_only=True)\n"
    )
    hits = source_violations(tmp_path / "pkg")
    assert all(hits[rule] for rule in SOURCE_RULES), hits
    assert hits["trust_remote_code"] == ["pkg/bad.py:4", "pkg/bad.py:5"]
    assert "pkg/bad.py:7" not in hits["torch.load without weights_only=True"]  # the safe call is allowed


@pytest.mark.e2e
def test_recipe_skips_corrupt_images_and_reports_the_exact_count(tmp_path, tiny_text_dir, one_cpu_thread, capsys):
    """The recipe with `--on_bad_example skip`, DataLoader worker processes on, a corrupt file of each kind (in this
    process, with the arguments `accelerate launch recipes/vqa.py` would get)."""
    import json

    from helpers_data import CORRUPTIONS, make_imagefolder
    from test_e2e import run_here

    data = make_imagefolder(tmp_path / "data", n_train=40, n_test=10)
    broken = {
        ("train", 3): "zero_bytes",
        ("train", 11): "not_an_image",
        ("train", 20): "truncated",
        ("eval", 4): "truncated",
    }
    for (split, row), kind in broken.items():
        CORRUPTIONS[kind][0](data / ("train" if split == "train" else "test") / f"{row}.png")
    run_here(
        tmp_path / "out",
        tiny_text_dir,
        "--dataset",
        str(data),
        "--on_bad_example",
        "skip",
        "--max_bad_fraction",
        "0.1",
        "--dataloader_num_workers",
        "2",
    )
    assert "skipped rows (train: 3 of 40, eval: 1 of 10)" in capsys.readouterr().out
    listed = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {(e["split"], e["row"]): e["stage"] for e in listed} == {
        key: CORRUPTIONS[kind][1] for key, kind in broken.items()
    }
    results = json.loads((tmp_path / "out" / "test_results.json").read_text())
    assert results["test_excluded_bad_rows"] == 1.0


def test_nan_on_one_of_two_processes_stops_every_process_with_the_same_message(tmp_path):
    """Rank 1 alone meets a NaN loss at step 3: both ranks must stop at that step, within a bounded time."""
    import signal
    import subprocess
    import sys
    import time

    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "helpers_nan_worker.py"),
        "--out",
        str(tmp_path),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=REPO / "tests",
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and both workers
        output, _ = process.communicate()
        pytest.fail(f"a rank was still waiting {time.monotonic() - started:.0f} s after the NaN:\n{output[-3000:]}")
    endings = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert process.returncode != 0
    assert endings[0] == endings[1], endings  # the same message on every rank
    assert endings[0].startswith("NonFiniteLossError: training loss is nan at step 3 on process 1 of 2"), endings[0]
