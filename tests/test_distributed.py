"""Data parallelism and gradient accumulation change nothing but speed, checked with real processes on the CPU.

One global batch of 8, three layouts of the same run: 1 process x 8, 2 gloo processes x 4 (accelerate_configs/
multi_gpu.yaml, a real `accelerate launch`), and 1 process x 4 x 2 accumulation steps (1-process runs go through the
same `mmft.training.run` in the test process, on one thread like a launched process, to keep the suite short). All
must end with the same weights and log the same
per-step losses and gradient norms. Dropout is 0 so no random draw depends on the layout; the data order is accelerate's
seeded sampler, whose global batches are split across processes in order.

That holds when the rows fill whole global batches. With 20 rows, the last batch of an epoch holds 4: one process
takes a batch of 4, while 2 processes get a full batch each, rank 1's made of repeated rows (accelerate's
`even_batches`). The runs then differ, which is also the negative control of the comparison (it sees a changed
batch); mmft says so when the run starts, and `--dataloader_drop_last true` makes them agree again.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers_data import make_imagefolder
from helpers_launch import (
    final_metrics,
    log_history,
    max_abs_diff,
    recipe_argv,
    recipe_command,
    run_in_process,
    run_recipe,
    save_tiny_text_tower,
    weights,
)
from helpers_multi_run import MULTI_RUN, RUN_SEPARATOR, run_outputs

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_cpu_thread")]
STEPS = 6  # 24 training rows, global batch 8: 3 steps per epoch, so the sampler reshuffles once
TOLERANCE = 1e-5
PLANS = {
    # LoRA on the vision tower; the text tower frozen with its outputs cached per question (as in the default preset)
    "lora": [
        "--lora_vision",
        "lora",
        "--lora_text",
        "frozen",
        "--lora_r",
        "4",
        "--lora_dropout",
        "0",
        "--cache_frozen_text",
        "true",
    ],
    "full": ["--lora_vision", "full", "--lora_text", "full"],
}
LAYOUTS = {"1 process x 8": (1, 8, 1), "2 processes x 4": (2, 4, 1), "1 process x 4 x 2 accumulation": (1, 4, 2)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ddp_inputs")
    return save_tiny_text_tower(root / "bert", dropout=0.0), make_imagefolder(root / "data")


def _flags(plan: str, batch: int, accumulation: int, *extra: str, steps: int = STEPS) -> list[str]:
    return [
        *PLANS[plan],
        "--hidden_dropout",
        "0",
        "--seed",
        "0",
        "--per_device_train_batch_size",
        str(batch),
        "--gradient_accumulation_steps",
        str(accumulation),
        "--max_steps",
        str(steps),
        "--save_strategy",
        "steps",
        "--save_steps",
        str(steps),
        *extra,
    ]


def _train(
    output_dir: Path,
    inputs: tuple[Path, Path],
    plan: str,
    processes: int,
    batch: int,
    accumulation: int,
    *extra: str,
    steps: int = STEPS,
) -> str:
    """Run the recipe (1 process: in this process); returns what a launched run printed."""
    flags = _flags(plan, batch, accumulation, *extra, steps=steps)
    if processes == 1:
        run_in_process(output_dir, *inputs, *flags)
        return ""
    result = run_recipe(recipe_command(output_dir, *inputs, *flags, processes=processes))
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def two_process_runs(inputs, uneven_inputs, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """The 2 x 4 runs, one after another in one 2-process launch (the processes start once): both plans' layout run
    and the uneven rows, padded and with --dataloader_drop_last. {name: (output_dir, what that run printed)}."""
    root = tmp_path_factory.mktemp("two_processes")
    runs = {plan: (root / plan, inputs, _flags(plan, 4, 1)) for plan in PLANS}
    for name, extra in UNEVEN.items():
        runs[f"uneven, {name}"] = (root / name, uneven_inputs, _flags("full", 4, 1, *extra, steps=UNEVEN_STEPS))
    (first, first_inputs, first_flags), *rest = runs.values()
    command = recipe_command(first, *first_inputs, *first_flags, processes=2, script=MULTI_RUN)
    for output_dir, data, flags in rest:
        command += [RUN_SEPARATOR, *recipe_argv(output_dir, *data, *flags)]
    result = run_recipe(command)
    printed = [out + err for out, err in zip(run_outputs(result.stdout), run_outputs(result.stderr), strict=True)]
    return {name: (output_dir, text) for (name, (output_dir, _, _)), text in zip(runs.items(), printed, strict=True)}


def _per_step(history: list[dict], key: str) -> list[float]:
    return [entry[key] for entry in history if key in entry]


@pytest.mark.parametrize("plan", PLANS)
def test_layouts_of_one_global_batch_train_identically(plan, inputs, two_process_runs, tmp_path):
    runs = {}
    for i, (name, shape) in enumerate(LAYOUTS.items()):
        if shape[0] == 1:
            _train(tmp_path / f"run{i}", inputs, plan, *shape)
        runs[name] = tmp_path / f"run{i}" if shape[0] == 1 else two_process_runs[plan][0]
    reference_name, reference = next(iter(runs.items()))
    reference_weights = weights(reference / "model.safetensors")
    reference_history = log_history(reference / f"checkpoint-{STEPS}")
    assert len(_per_step(reference_history, "loss")) == STEPS
    for name, output_dir in list(runs.items())[1:]:
        diff = max_abs_diff(reference_weights, weights(output_dir / "model.safetensors"))
        print(f"{plan}: {name} vs {reference_name}: max |weight diff| = {diff:.2e}")
        assert diff <= TOLERANCE, f"{name}: weights differ from {reference_name} by {diff:.2e}"
        history = log_history(output_dir / f"checkpoint-{STEPS}")
        for key in ("loss", "grad_norm", "learning_rate"):
            ours, theirs = _per_step(history, key), _per_step(reference_history, key)
            assert len(ours) == len(theirs) == STEPS
            for step, (a, b) in enumerate(zip(ours, theirs), start=1):
                same = math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
                assert same, f"{name}: {key} at step {step}: {a} vs {b}"
        metrics, reference_metrics = final_metrics(output_dir), final_metrics(reference)
        assert metrics["test_accuracy"] == reference_metrics["test_accuracy"]
        assert math.isclose(metrics["test_loss"], reference_metrics["test_loss"], rel_tol=TOLERANCE)


UNEVEN_ROWS, UNEVEN_STEPS = 20, 3  # 3 steps of a global batch of 8: the third holds the epoch's last 4 rows
UNEVEN = {"padded last batch": (), "--dataloader_drop_last": ("--dataloader_drop_last", "true")}


@pytest.fixture(scope="module")
def uneven_inputs(inputs, tmp_path_factory) -> tuple[Path, Path]:
    return inputs[0], make_imagefolder(tmp_path_factory.mktemp("uneven") / "data", n_train=UNEVEN_ROWS)


@pytest.mark.parametrize("uneven", UNEVEN)
def test_rows_that_do_not_fill_the_last_global_batch(uneven, uneven_inputs, two_process_runs, tmp_path):
    _train(tmp_path / "one", uneven_inputs, "full", 1, 8, 1, *UNEVEN[uneven], steps=UNEVEN_STEPS)
    two_dir, two = two_process_runs[f"uneven, {uneven}"]
    diff = max_abs_diff(weights(tmp_path / "one" / "model.safetensors"), weights(two_dir / "model.safetensors"))
    print(f"{UNEVEN_ROWS} rows, {uneven}: 2 processes x 4 vs 1 process x 8: max |weight diff| {diff:.2e}")
    warning = f"{UNEVEN_ROWS} training rows do not fill whole batches of 2 processes x 4"
    if UNEVEN[uneven]:  # --dataloader_drop_last
        assert diff <= TOLERANCE and warning not in two
    else:
        assert diff > 100 * TOLERANCE  # the repeated rows changed step 3: the comparison sees it
        assert warning in two and "filled up with 4 repeated rows" in two


def test_runs_whose_rows_fill_every_batch_do_not_warn(two_process_runs):
    for plan in PLANS:
        assert "do not fill whole batches" not in two_process_runs[plan][1], plan
