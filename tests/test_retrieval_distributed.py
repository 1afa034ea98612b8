"""Retrieval through the recipe: 2 processes x 4 train as 1 process x 8, and the run's outputs (both evaluation
stages, the card, `mmft search` on the saved model).

In-batch negatives make this harder than for the other tasks: each process must contrast its rows against the batch
of every process (an all-gather that keeps gradients) and draw the same hard negatives. The negative control turns
the gather off (`--gather_negatives false`): each process then sees only its 4 rows and the run must differ. Both
2-process runs share one `accelerate launch` (tests/helpers_retrieval_worker.py); the 1-process reference runs in this
process on one thread, the arithmetic of a launched process. Gradient accumulation is not an equivalent layout here
(negatives come from one micro-batch), so it is not tested.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers_data import make_caption_folder
from helpers_launch import (
    ACCELERATE,
    REPO,
    final_metrics,
    free_port,
    log_history,
    max_abs_diff,
    recipe_argv,
    run_recipe,
    save_tiny_text_tower,
)
from helpers_launch import weights as load_weights

from mmft.arguments import parse_recipe_args
from mmft.cli import main
from mmft.training import run

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_cpu_thread")]
STEPS = 3  # 14 images -> 26 (image, caption) pairs: 3 full global batches of 8 in the first epoch
TOLERANCE = 1e-5
PRESET = REPO / "recipes" / "configs" / "scenes_retrieval.yaml"
WORKER = Path(__file__).with_name("helpers_retrieval_worker.py")


def _flags(batch: int) -> list[str]:
    return [
        "--lora_vision",
        "full",
        "--lora_text",
        "full",
        "--hidden_dropout",
        "0",
        "--per_device_train_batch_size",
        str(batch),
        "--max_steps",
        str(STEPS),
        "--save_strategy",
        "steps",
        "--save_steps",
        str(STEPS),
        "--rerank_k",
        "4",
        "--seed",
        "0",
        "--per_device_eval_batch_size",
        "4",
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("retrieval_ddp")
    text, data = save_tiny_text_tower(root / "bert", dropout=0.0), make_caption_folder(root / "data", 14, 8)
    out = {"data": data, "1 process x 8": root / "one", "2 processes x 4": root / "two", "no gather": root / "apart"}
    argv = recipe_argv(out["1 process x 8"], text, data, *_flags(8))
    run("retrieval", parse_recipe_args(["--config", str(PRESET), *argv], "retrieval", default_config=str(PRESET)))
    flags = recipe_argv(root / "unused", text, data, *_flags(4))
    at = flags.index("--output_dir")
    del flags[at : at + 2]  # the worker gives each of its two runs its own
    run_recipe(
        [
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
            str(WORKER),
            str(out["2 processes x 4"]),
            str(out["no gather"]),
            *flags,
        ]
    )
    return out


def _per_step(history: list[dict], key: str) -> list[float]:
    return [entry[key] for entry in history if key in entry]


def test_two_processes_train_like_one_with_the_same_global_batch(runs):
    reference = load_weights(runs["1 process x 8"] / "model.safetensors")
    diff = max_abs_diff(reference, load_weights(runs["2 processes x 4"] / "model.safetensors"))
    print(f"2 processes x 4 vs 1 process x 8: max |weight diff| = {diff:.2e}")
    assert diff <= TOLERANCE
    ours = log_history(runs["2 processes x 4"] / f"checkpoint-{STEPS}")
    theirs = log_history(runs["1 process x 8"] / f"checkpoint-{STEPS}")
    for key in ("loss", "grad_norm"):
        a, b = _per_step(ours, key), _per_step(theirs, key)
        assert len(a) == len(b) == STEPS
        for step, (x, y) in enumerate(zip(a, b), start=1):
            assert math.isclose(x, y, rel_tol=TOLERANCE, abs_tol=TOLERANCE), f"{key} at step {step}: {x} vs {y}"
    # The throughput callback sees retrieval steps too (each process pads its own captions, so counts may differ).
    assert min(_per_step(theirs, "perf/flops_per_step") + _per_step(ours, "perf/flops_per_step")) > 0
    # Evaluation runs on both processes (each re-ranks half of the queries); the figures must not change.
    one, two = final_metrics(runs["1 process x 8"]), final_metrics(runs["2 processes x 4"])
    for key in (k for k in one if "recall" in k or "rsum" in k):
        assert one[key] == pytest.approx(two[key], abs=1e-9), key


def test_negative_control_without_the_gather_the_layouts_differ(runs):
    reference = load_weights(runs["1 process x 8"] / "model.safetensors")
    diff = max_abs_diff(reference, load_weights(runs["no gather"] / "model.safetensors"))
    print(f"no gather vs 1 process x 8: max |weight diff| = {diff:.2e}")
    assert diff > 100 * TOLERANCE
    first_loss = _per_step(log_history(runs["no gather"] / f"checkpoint-{STEPS}"), "loss")[0]
    reference_loss = _per_step(log_history(runs["1 process x 8"] / f"checkpoint-{STEPS}"), "loss")[0]
    assert not math.isclose(first_loss, reference_loss, rel_tol=TOLERANCE)  # fewer negatives: a smaller loss


def test_run_reports_both_stages_and_the_card_carries_them(runs):
    output = runs["1 process x 8"]
    metrics = final_metrics(output)
    for stage in ("dual", "rerank"):
        for key in (
            "t2i_recall@1",
            "t2i_recall@5",
            "t2i_recall@10",
            "i2t_recall@1",
            "i2t_recall@5",
            "i2t_recall@10",
            "rsum",
        ):
            assert f"test_{stage}_{key}" in metrics
    card = (output / "README.md").read_text()
    front = card.split("---")[1]
    assert "type: image-text-retrieval" in front
    for key in ("test_dual_t2i_recall@1", "test_rerank_t2i_recall@1", "test_dual_rsum", "test_rerank_rsum"):
        assert f"name: {key}" in front, key
    assert "seconds" not in front and "over 2 labels" not in card
    records = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert {r["direction"] for r in records} == {"t2i", "i2t"} and len(records) == 15 + 8  # 8 test images, 15 captions


def test_saved_run_answers_mmft_search(runs, capsys):
    output, images = runs["1 process x 8"], runs["data"] / "test"
    command = [
        "search",
        "--model",
        str(output),
        "--images",
        str(images),
        "--query",
        "a red square at the top left",
        "--top_k",
        "3",
        "--rerank_k",
        "4",
        "--device",
        "cpu",
    ]
    assert main(command) == 0
    first = capsys.readouterr()
    lines = first.out.strip().splitlines()
    assert lines[0] == "rank\tscore\tmatch\tsimilarity\titem" and len(lines) == 4
    assert all(Path(line.split("\t")[4]).parent == images for line in lines[1:])
    assert "embedded 8, reused 0" in first.err
    assert main(command) == 0
    second = capsys.readouterr()
    assert second.out == first.out and "embedded 0, reused 8" in second.err
