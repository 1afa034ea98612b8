"""Smoke test of the fusion study (`benchmarks/ablation.py`): every variant builds, trains and is scored.

Tiny towers (random 1-layer BERT with MiniLM's tokenizer, resnet10t stride-4 map at 32 px), one seed, a few steps
on a slice of easy-VQA. No accuracy thresholds: the study's figures come from `make ablation`, not from here.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_text_config
from transformers import AutoModel, AutoTokenizer

from mmft.towers import resolve_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ablation import AblationArguments, run_ablation  # noqa: E402
from ablation_models import VARIANTS  # noqa: E402

STEPS = 2


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    torch.manual_seed(0)
    AutoModel.from_config(tiny_text_config()).save_pretrained(root / "text")
    AutoTokenizer.from_pretrained(resolve_name("minilm")).save_pretrained(root / "text")
    args = AblationArguments(
        seeds=[0], max_steps=STEPS, eval_samples=48, results=str(root / "results.json"), vilt_layers=1
    )
    overrides = [
        "--vision_model_args",
        '{"features_only": true, "out_indices": [1]}',
        "--image_size",
        "32",
        "--text_model",
        str(root / "text"),
        "--hidden_size",
        "32",
        "--num_attention_heads",
        "2",
        "--num_bridge_layers",
        "1",
        "--max_train_samples",
        "64",
        "--per_device_train_batch_size",
        "8",
        "--per_device_eval_batch_size",
        "48",
        "--learning_rate",
        "1e-3",
        "--warmup_steps",
        "0",
        "--logging_steps",
        "1",
    ]
    return args, overrides, run_ablation(args, overrides)


def test_every_variant_trains_and_is_scored(study):
    _, _, payload = study
    runs = {run["variant"]: run for run in payload["runs"]}
    assert sorted(runs) == sorted(VARIANTS)
    for name, run in runs.items():
        assert run["global_step"] == STEPS, name
        assert all(run["trainable_moved"]), f"{name}: a trainable tensor did not change"
        assert math.isfinite(run["train_loss"]), name
        assert 0.0 <= run["accuracy"] <= 1.0, name
        assert {"accuracy_yes_no", "accuracy_color", "accuracy_shape"} <= set(run), name
        assert run["eval_questions"] == 48 and run["step_s"] > 0, name


def test_frozen_text_tower_is_not_trained(study):
    _, _, payload = study
    for run in payload["runs"]:
        total, trainable = run["parameters"]["total"], run["parameters"]["trainable"]
        # The preset freezes the text tower; ViLT has no separate tower and trains everything from scratch.
        assert (trainable == total) == (run["variant"] == "vilt"), run["variant"]


def test_results_file_resumes_without_retraining(study):
    args, overrides, payload = study
    again = run_ablation(args, overrides)
    assert [r["wall_s"] for r in again["runs"]] == [r["wall_s"] for r in payload["runs"]]
    assert json.loads(Path(args.results).read_text())["runs"] == again["runs"]
