"""End-to-end: `accelerate launch recipes/vqa.py` on tiny towers for every data source format.

Each run trains 20 steps, writes test_results.json and predictions.jsonl, and the saved folder must reload through
the Auto classes and predict exactly the answers the run wrote. On the synthetic formats (a red or blue square; "what
color is the shape?" / "is the shape red?") the model must have learnt: test accuracy at least `LEARNT`, where
guessing scores 0.25 and the same run with a learning rate of 0 stays below the bar (the negative control). Every
row carries its answer 10 times, so a right answer scores 1.0 (VQA accuracy gives min(1, matches / 3)).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_data import make_imagefolder, make_parquet_hub_layout, make_vqav2_files
from helpers_launch import PRESET, run_vqa_recipe, tiny_tower_flags
from PIL import Image
from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

import mmft  # noqa: F401  (registers the Auto classes)

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")
LEARNT = 0.75  # of 16 test questions; chance is 0.25 (4 answers, evenly spread)
N_TRAIN, N_TEST = 24, 16


def recipe_flags(output_dir: Path, text_dir: Path, *extra: str) -> list[str]:
    return [
        *tiny_tower_flags(text_dir),
        "--max_steps",
        "20",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "8",
        "--learning_rate",
        "3e-3",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--logging_steps",
        "5",
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def launch(output_dir: Path, text_dir: Path, *extra: str, config: str = "cpu.yaml") -> subprocess.CompletedProcess:
    command = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(REPO / "accelerate_configs" / config),
        "--num_cpu_threads_per_process",
        "1",
        str(REPO / "recipes" / "vqa.py"),
        "--config",  # the demo preset, on this test's own data (else the task's defaults for real data)
        str(PRESET),
        *recipe_flags(output_dir, text_dir, *extra),
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def run_here(output_dir: Path, text_dir: Path, *extra: str) -> dict[str, float]:
    """`launch` without the launcher: the same recipe arguments (and preset) run in this process. Data formats run
    this way; the launched runs above check the command itself (use with conftest's `one_cpu_thread`)."""
    return run_vqa_recipe(recipe_flags(output_dir, text_dir, *extra))


def check_run(output_dir: Path, images: list, questions: list[str], learnt: float | None = LEARNT) -> None:
    results = json.loads((output_dir / "test_results.json").read_text())
    if learnt is not None:
        assert results["test_accuracy"] >= learnt, f"the model did not learn: {results}"
    written = [json.loads(line) for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(written) == len(questions)
    model = AutoModelForVisualQuestionAnswering.from_pretrained(output_dir).eval()
    processor = AutoProcessor.from_pretrained(output_dir)
    with torch.no_grad():
        logits = model(**processor(images=images, text=questions)).logits
    reloaded = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    assert reloaded == [row["prediction"] for row in written]


def _eval_rows_from_metadata(split_dir: Path):
    records = [json.loads(line) for line in (split_dir / "metadata.jsonl").read_text().splitlines()]
    return [Image.open(split_dir / r["file_name"]) for r in records], [r["question"] for r in records]


def test_imagefolder_dataset(tmp_path, tiny_text_dir, one_cpu_thread):
    data = make_imagefolder(tmp_path / "data", N_TRAIN, N_TEST, answers_per_row=10)
    # Questions are 7-8 tokens: trained at 6, the saved processor must cut them there too for check_run to agree.
    run_here(
        tmp_path / "out",
        tiny_text_dir,
        "--dataset",
        str(data),
        "--lora_text",
        "lora",
        "--lora_vision",
        "lora",
        "--max_text_length",
        "6",
    )
    assert AutoProcessor.from_pretrained(tmp_path / "out").max_length == 6
    check_run(tmp_path / "out", *_eval_rows_from_metadata(data / "test"))


def test_learning_bar_fails_a_model_that_did_not_learn(tmp_path, tiny_text_dir, one_cpu_thread):
    """The negative control of `LEARNT`: the imagefolder run with a learning rate of 0 (in this process)."""
    from mmft.arguments import parse_recipe_args
    from mmft.training import run

    data = make_imagefolder(tmp_path / "data", N_TRAIN, N_TEST, answers_per_row=10)
    flags = recipe_flags(
        tmp_path / "out",
        tiny_text_dir,
        "--dataset",
        str(data),
        "--lora_text",
        "lora",
        "--lora_vision",
        "lora",
        "--learning_rate",
        "0",
        "--plots",
        "false",
    )
    metrics = run("vqa", parse_recipe_args(flags, "vqa"))
    assert metrics["test_accuracy"] < LEARNT


def test_hub_style_dataset_with_column_mapping(tmp_path, tiny_text_dir, one_cpu_thread):
    from datasets import load_dataset

    data = make_parquet_hub_layout(tmp_path / "hub", N_TRAIN, N_TEST)
    run_here(
        tmp_path / "out",
        tiny_text_dir,
        "--dataset",
        str(data),
        "--image_column",
        "img",
        "--question_column",
        "query",
        "--answers_column",
        "label",
    )
    test = load_dataset(str(data))["test"]
    check_run(tmp_path / "out", list(test["img"]), list(test["query"]))


def test_vqav2_files(tmp_path, tiny_text_dir, one_cpu_thread):
    paths = make_vqav2_files(tmp_path / "vqa", N_TRAIN, N_TEST)
    (q, a, d), (eq, ea, ed) = paths["train"], paths["val"]
    run_here(
        tmp_path / "out",
        tiny_text_dir,
        "--dataset",
        "vqav2",
        "--questions_file",
        q,
        "--annotations_file",
        a,
        "--image_dir",
        d,
        "--eval_questions_file",
        eq,
        "--eval_annotations_file",
        ea,
        "--eval_image_dir",
        ed,
    )
    questions = [x["question"] for x in json.loads(Path(eq).read_text())["questions"]]
    images = [Image.open(Path(ed) / f"COCO_val2014_{i:012d}.jpg") for i in range(len(questions))]
    check_run(tmp_path / "out", images, questions)


def test_easy_vqa_preset_subset(tmp_path, tiny_text_dir):
    from mmft.data import load_easy_vqa

    launch(tmp_path / "out", tiny_text_dir, "--max_train_samples", "256", "--max_eval_samples", "24")
    test = load_easy_vqa()["test"].select(range(24))
    # 20 steps of tiny towers are not enough for easy-VQA's shapes: this checks the preset, the save and the reload
    check_run(tmp_path / "out", list(test["image"]), list(test["question"]), learnt=None)


def _save_vision_folder(kind: str, path: Path) -> Path:
    """A tiny vision tower saved as a user's folder, built for 64 px images (the recipe then runs it at 32 px)."""
    from transformers import TimmWrapperConfig, TimmWrapperModel, ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    if kind == "hf_vit":
        config = ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=64,
            patch_size=8,
        )
        ViTModel(config, add_pooling_layer=False).save_pretrained(path)
        ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(path)
    else:  # a timm ViT saved through transformers' TimmWrapper, without an image processor file
        args = {"img_size": 64, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
        TimmWrapperModel(TimmWrapperConfig(architecture="vit_tiny_patch16_224", model_args=args)).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["hf_vit", "timm_vit"])
def test_another_vision_tower_needs_only_its_folder_and_an_image_size(kind, tmp_path, caplog, one_cpu_thread):
    """The default preset's tower keys (a CNN's features_only/out_indices, 64 px) follow its tower away. In this
    process, with the arguments `accelerate launch recipes/vqa.py` would get (test_easy_vqa_preset_subset launches)."""
    from safetensors.torch import load_file

    folder = _save_vision_folder(kind, tmp_path / "tower")
    data = make_imagefolder(tmp_path / "data", n_train=16, n_test=4)
    flags = [
        "--vision_model",
        str(folder),
        "--image_size",
        "32",
        "--dataset",
        str(data),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    with caplog.at_level(logging.WARNING, logger="mmft"):
        run_vqa_recipe(flags)
    said = caplog.text
    assert "so its vision_model_args=" in said  # the run said what it dropped
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["vision_config"]
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    if kind == "timm_vit":  # every block is there and trained, not a features_only stump
        assert "features_only" not in saved["model_args"] and saved["model_args"]["depth"] == 2
        assert any(k.startswith("mmft.vision_tower.model.timm_model.blocks.1.") for k in weights)
    assert json.loads((tmp_path / "out" / "processor_config.json").read_text())["image_processor"]["size"] == {
        "height": 32,
        "width": 32,
    }
