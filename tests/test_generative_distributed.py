"""Generative VQA trains alike on 2 processes x 4 and 1 process x 8, checked with real processes on the CPU.

The run is recipes/generative_vqa.py on a tiny LLaVA-style conversation folder (the chat collator, the decoder with
its image prefix, every parameter trained): a real `accelerate launch` of 2 gloo processes (accelerate_configs/
multi_gpu.yaml) against the same run in this process, on one thread like a launched process. Both must log the same
per-step losses and end with the same weights (within 1e-5); then the sharded evaluation (each process generates its
share of the test turns, `map_and_gather` puts them back in order) must give the same predictions and scores.

24 rows fill 3 global batches of 8 exactly and dropout is 0, so nothing depends on the layout. Negative control: the
1-process run with another data order (`--data_seed 1`: the same initial weights, other batches) ends with weights
far outside the tolerance (7e-4 against 1e-5) and logs another first loss, so the comparison does see a changed batch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers_captioning import save_tiny_decoder
from helpers_conversations import write_conversations
from helpers_launch import (
    REPO,
    log_history,
    max_abs_diff,
    recipe_argv,
    recipe_command,
    run_recipe,
    run_task_recipe,
    save_tiny_text_tower,
    weights,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_cpu_thread")]
RECIPE = REPO / "recipes" / "generative_vqa.py"
PRESET = REPO / "recipes" / "configs" / "easy_vqa_generative.yaml"
STEPS, TOLERANCE = 3, 1e-5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("generative_ddp")
    text = save_tiny_text_tower(root / "bert", dropout=0.0)
    return text, write_conversations(root / "data", n_train=24, n_test=5), save_tiny_decoder(root / "decoder")


def _flags(decoder: Path, batch: int, *extra: str) -> list[str]:
    flags = {
        "--decoder_model": str(decoder),
        "--num_query_tokens": "4",
        "--lora_vision": "full",
        "--lora_text": "frozen",
        "--lora_decoder": "full",
        "--hidden_dropout": "0",
        "--seed": "0",
        "--per_device_train_batch_size": str(batch),
        "--per_device_eval_batch_size": "2",
        "--max_steps": str(STEPS),
        "--save_strategy": "steps",
        "--save_steps": str(STEPS),
        "--max_new_tokens": "2",
        # fp32: the preset's bf16 autocast rounds a batch of 8 and two of 4 differently (~2e-4 apart after the run)
        "--bf16": "false",
    }
    return [*(token for pair in flags.items() for token in pair), *extra]


def _one_process(output_dir: Path, inputs, *extra: str) -> None:
    text, data, decoder = inputs
    run_task_recipe("generative_vqa", recipe_argv(output_dir, text, data, *_flags(decoder, 8, *extra)), PRESET)


def _losses(output_dir: Path) -> list[float]:
    return [entry["loss"] for entry in log_history(output_dir / f"checkpoint-{STEPS}") if "loss" in entry]


def test_two_processes_train_and_evaluate_like_one(inputs, tmp_path):
    text, data, decoder = inputs
    two_flags = ["--config", str(PRESET), *_flags(decoder, 4)]  # in this process, run_task_recipe names the preset
    run_recipe(recipe_command(tmp_path / "two", text, data, *two_flags, processes=2, script=RECIPE))
    _one_process(tmp_path / "one", inputs)
    one, two = weights(tmp_path / "one" / "model.safetensors"), weights(tmp_path / "two" / "model.safetensors")
    diff = max_abs_diff(one, two)
    print(f"generative VQA: 2 processes x 4 vs 1 process x 8: max |weight diff| = {diff:.2e}")
    assert diff <= TOLERANCE
    losses = _losses(tmp_path / "one")
    assert len(losses) == STEPS and len(_losses(tmp_path / "two")) == STEPS
    for step, (a, b) in enumerate(zip(losses, _losses(tmp_path / "two")), start=1):
        assert math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE), f"loss at step {step}: {a} vs {b}"
    # the sharded generation: every test turn generated once, in order, as by one process
    predictions = [(tmp_path / run / "predictions.jsonl").read_text() for run in ("one", "two")]
    assert predictions[0] == predictions[1] and len(predictions[0].splitlines()) == 10  # 5 rows x 2 turns
    results = [json.loads((tmp_path / run / "test_results.json").read_text()) for run in ("one", "two")]
    for key in ("test_exact_match", "test_accuracy", "test_cider", "test_scored_turns"):
        assert results[0][key] == results[1][key], key

    # negative control: another data order, same initial weights -> the comparison sees it
    _one_process(tmp_path / "shuffled", inputs, "--data_seed", "1")
    shuffled = max_abs_diff(one, weights(tmp_path / "shuffled" / "model.safetensors"))
    print(f"negative control (--data_seed 1): max |weight diff| = {shuffled:.2e}")
    assert shuffled > 10 * TOLERANCE  # 7e-4 when written
    assert not math.isclose(_losses(tmp_path / "shuffled")[0], losses[0], rel_tol=TOLERANCE, abs_tol=TOLERANCE)
