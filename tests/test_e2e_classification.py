"""End-to-end: `accelerate launch recipes/classification.py` on tiny towers, then save -> load -> pipeline -> CLI.

The data is learnable by a tiny model (is the claimed colour the square's colour?), so the run must beat chance;
the saved folder must reload through mmft's Auto class and answer exactly as `predictions.jsonl` says, through the
Python model, the `mmft-image-text-classification` pipeline and `mmft predict`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_TIMM_VIT
from helpers_data import write_image
from PIL import Image
from transformers import AutoProcessor, pipeline

import mmft
from mmft.cli import main

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")


def make_entailment_folder(root: Path, n_train: int = 48, n_test: int = 16) -> Path:
    """Statements about the colour of a square, true or false: learnable from colour alone."""
    for split, n in (("train", n_train), ("test", n_test)):
        folder = root / split
        folder.mkdir(parents=True)
        with (folder / "metadata.jsonl").open("w") as handle:
            for i in range(n):
                colour, claim = ("red", "blue")[i % 2], ("red", "blue")[(i // 2) % 2]
                write_image(folder / f"{i}.png", colour)
                handle.write(json.dumps({"file_name": f"{i}.png", "text": f"the square is {claim}",
                                         "label": "true" if claim == colour else "false"}) + "\n")  # fmt: skip
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_text_dir):
    root = tmp_path_factory.mktemp("cls")
    data, output = make_entailment_folder(root / "data"), root / "out"
    command = [
        str(ACCELERATE), "launch", "--config_file", str(REPO / "accelerate_configs" / "cpu.yaml"),
        "--num_cpu_threads_per_process", "1", str(REPO / "recipes" / "classification.py"), "--dataset", str(data),
        "--vision_model", "timm:vit_tiny_patch16_224", "--vision_model_args", json.dumps(TINY_TIMM_VIT),
        "--image_size", "32", "--text_model", str(tiny_text_dir), "--num_bridge_layers", "1", "--hidden_size", "32",
        "--num_attention_heads", "2", "--num_train_epochs", "12", "--per_device_train_batch_size", "8",
        "--learning_rate", "3e-3", "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "10",
        "--class_weights", "balanced", "--output_dir", str(output),
    ]  # fmt: skip
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"data": data, "output": output}


def test_the_run_learns_and_writes_metrics_predictions_matrix_and_card(trained):
    output = trained["output"]
    results = json.loads((output / "test_results.json").read_text())
    assert results["test_accuracy"] >= 0.75  # chance is 0.5 on the balanced test split
    assert {"test_f1_macro", "test_f1_true", "test_f1_false", "test_roc_auc"} <= results.keys()
    assert (output / "confusion_matrix.png").stat().st_size > 0
    card = (output / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    metrics = {m["type"]: m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
    assert metrics["accuracy"] == pytest.approx(results["test_accuracy"]) and "roc_auc" in metrics
    assert metadata["model-index"][0]["results"][0]["task"]["type"] == "image-text-classification"


def test_saved_model_reloads_and_answers_as_predictions_jsonl_through_every_entry_point(trained, capsys):
    output, test_dir = trained["output"], trained["data"] / "test"
    records = [json.loads(line) for line in (test_dir / "metadata.jsonl").read_text().splitlines()]
    written = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    model = mmft.AutoModelForImageTextClassification.from_pretrained(output).eval()
    assert type(model) is mmft.MMFTForImageTextClassification
    processor = AutoProcessor.from_pretrained(output)
    images = [Image.open(test_dir / r["file_name"]) for r in records]
    with torch.no_grad():
        logits = model(**processor(images=images, text=[r["text"] for r in records])).logits
    reloaded = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    assert reloaded == [w["prediction"] for w in written]
    classify = pipeline("mmft-image-text-classification", model=str(output))
    first = classify(image=str(test_dir / records[0]["file_name"]), text=records[0]["text"])
    assert first[0]["label"] == written[0]["prediction"] and len(first) == 2
    assert main(["predict", "--model", str(output), "--task", "classification", "--image",
                 str(test_dir / records[0]["file_name"]), "--text", records[0]["text"]]) == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines()[0].endswith("\t" + written[0]["prediction"])
    with pytest.raises(SystemExit, match="holds a 'classification' model"):
        main(["predict", "--model", str(output), "--task", "vqa", "--image", str(test_dir / "0.png"), "--text", "x"])
