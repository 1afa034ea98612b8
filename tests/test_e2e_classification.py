"""End-to-end: `accelerate launch recipes/classification.py` on tiny towers, then save -> load -> pipeline -> CLI.

The data is learnable by a tiny model (is the claimed colour the square's colour?), so the run must beat chance;
the saved folder must reload through mmft's Auto class and answer exactly as `predictions.jsonl` says, through the
Python model, the `mmft-image-text-classification` pipeline and `mmft predict`.

A multi-label run (the recipe's arguments, run in this process on one thread) must report the metrics that an
independent computation from the saved model's logits gives: sigmoid > 0.5 predictions, subset accuracy, per-label
F1 and ROC-AUC counted pair by pair, none of it through mmft's metric code; and its saved head must carry the
`--class_weights balanced` BCE `pos_weight` counted from the training rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers_data import write_image
from helpers_launch import run_task_recipe, tiny_tower_flags
from PIL import Image
from transformers import AutoProcessor, pipeline

import mmft
from mmft.cli import main

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")
PRESET = REPO / "recipes" / "configs" / "easy_vqa_entailment.yaml"  # what recipes/classification.py reads first


def make_entailment_folder(root: Path, n_train: int = 48, n_test: int = 16) -> Path:
    """Statements about the colour of a square, true or false: learnable from colour alone."""
    for split, n in (("train", n_train), ("test", n_test)):
        folder = root / split
        folder.mkdir(parents=True)
        with (folder / "metadata.jsonl").open("w") as handle:
            for i in range(n):
                colour, claim = ("red", "blue")[i % 2], ("red", "blue")[(i // 2) % 2]
                write_image(folder / f"{i}.png", colour)
                handle.write(
                    json.dumps(
                        {
                            "file_name": f"{i}.png",
                            "text": f"the square is {claim}",
                            "label": "true" if claim == colour else "false",
                        }
                    )
                    + "\n"
                )
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_text_dir):
    root = tmp_path_factory.mktemp("cls")
    data, output = make_entailment_folder(root / "data"), root / "out"
    command = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(REPO / "accelerate_configs" / "cpu.yaml"),
        "--num_cpu_threads_per_process",
        "1",
        str(REPO / "recipes" / "classification.py"),
        "--config",  # the demo preset, on this test's own data (else the task's defaults for real data)
        str(PRESET),
        "--dataset",
        str(data),
        *tiny_tower_flags(tiny_text_dir),
        "--num_train_epochs",
        "12",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "3e-3",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--logging_steps",
        "10",
        "--class_weights",
        "balanced",
        "--output_dir",
        str(output),
    ]
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
    assert (
        main(
            [
                "predict",
                "--model",
                str(output),
                "--task",
                "classification",
                "--image",
                str(test_dir / records[0]["file_name"]),
                "--text",
                records[0]["text"],
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines()[0].endswith("\t" + written[0]["prediction"])
    with pytest.raises(SystemExit, match="holds a 'classification' model"):
        main(["predict", "--model", str(output), "--task", "vqa", "--image", str(test_dir / "0.png"), "--text", "x"])


# -- multi-label -------------------------------------------------------------------------------------------------
def multi_label_row(i: int) -> dict:
    """Row i: the square's colour (blue on every third row, from the image) and "big" when the text says so (every
    fourth row). Both are imbalanced, so `balanced` pos_weights differ from 1; every row has 1 or 2 labels (so the
    task turns multi-label by itself), and the row number in the text makes every input, hence every score, its own."""
    colour, big = ("blue" if i % 3 == 0 else "red"), i % 4 == 0
    return {
        "file_name": f"{i}.png",
        "colour": colour,
        "text": f"a {'big' if big else 'small'} shape {i}",
        "labels": [colour] + (["big"] if big else []),
    }


def make_multi_label_folder(root: Path, n_train: int, n_test: int) -> Path:
    """Train and test imagefolder splits of `multi_label_row` rows (a `labels` list per row)."""
    for split, n in (("train", n_train), ("test", n_test)):
        folder = root / split
        folder.mkdir(parents=True)
        with (folder / "metadata.jsonl").open("w") as handle:
            for row in map(multi_label_row, range(n)):
                write_image(folder / row["file_name"], row["colour"])
                handle.write(json.dumps({k: row[k] for k in ("file_name", "text", "labels")}) + "\n")
    return root


def pairwise_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half: every pair counted."""
    positives, negatives = scores[truth], scores[~truth]
    wins = sum(float(p > n) + 0.5 * float(p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


N_TRAIN_MULTI, N_TEST_MULTI = 32, 16


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory, tiny_text_dir, one_cpu_thread):
    """A 2-epoch (8-step) multi-label recipe run with balanced class weights, then its saved model reloaded and run
    once on the test rows: 2 epochs learn the colours and not yet all of "big", so the case is not trivially perfect
    and subset accuracy differs from per-label accuracy."""
    root = tmp_path_factory.mktemp("multi_label")
    data, output = make_multi_label_folder(root / "data", N_TRAIN_MULTI, N_TEST_MULTI), root / "out"
    argv = [
        "--dataset",
        str(data),
        *tiny_tower_flags(tiny_text_dir),
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--per_device_eval_batch_size",
        str(N_TEST_MULTI),
        "--learning_rate",
        "3e-3",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--logging_steps",
        "10",
        "--disable_tqdm",
        "true",
        "--class_weights",
        "balanced",
        "--output_dir",
        str(output),
    ]
    run_task_recipe("classification", argv, PRESET)
    rows = [multi_label_row(i) for i in range(N_TEST_MULTI)]
    model = mmft.AutoModelForImageTextClassification.from_pretrained(output).eval()
    processor = AutoProcessor.from_pretrained(output)
    images = [Image.open(data / "test" / row["file_name"]) for row in rows]
    inputs = processor(images=images, text=[row["text"] for row in rows])
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    truth = torch.tensor([[float(name in row["labels"]) for name in names] for row in rows])  # (N, K) multi-hot
    with torch.no_grad():
        logits = model(**inputs).logits
    return {"output": output, "model": model, "inputs": inputs, "names": names, "logits": logits, "truth": truth}


def test_multi_label_run_reports_the_metrics_of_its_saved_models_logits(multi_label_run):
    run = multi_label_run
    results = json.loads((run["output"] / "test_results.json").read_text())
    predicted = run["logits"].sigmoid().numpy() > 0.5
    scores, truth = run["logits"].numpy(), run["truth"].numpy().astype(bool)  # sigmoid is monotone: same AUC
    subset = float(np.mean((predicted == truth).all(axis=1)))
    hamming = float(np.mean(predicted == truth))
    assert subset != hamming  # the case tells exact match from per-label accuracy
    assert results["test_accuracy"] == pytest.approx(subset)
    tp, fp, fn = (predicted & truth).sum(0), (predicted & ~truth).sum(0), (~predicted & truth).sum(0)
    f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)  # every label occurs: the macro is over all
    assert results["test_f1_macro"] == pytest.approx(float(f1.mean()))
    per_label = [pairwise_auc(scores[:, k], truth[:, k]) for k in range(truth.shape[1])]  # each label has both classes
    assert results["test_roc_auc"] == pytest.approx(float(np.mean(per_label)))
    assert results["test_roc_auc"] > 0.75  # the run learnt (chance is 0.5)
    written = [json.loads(line) for line in (run["output"] / "predictions.jsonl").read_text().splitlines()]
    assert [sorted(w["prediction"]) for w in written] == [
        sorted(name for name, on in zip(run["names"], row) if on) for row in predicted
    ]  # the run's own rows, in order, thresholded as the reloaded logits are


def test_balanced_class_weights_are_the_bce_pos_weight_of_the_saved_multi_label_head(multi_label_run):
    run, train = multi_label_run, [multi_label_row(i) for i in range(N_TRAIN_MULTI)]
    positives = np.array([sum(name in row["labels"] for row in train) for name in run["names"]], dtype=float)
    pos_weight = torch.tensor((N_TRAIN_MULTI - positives) / positives, dtype=torch.float32)  # negatives / positives
    assert not torch.allclose(pos_weight, torch.ones_like(pos_weight))  # else pos_weight would change nothing
    assert run["model"].config.problem_type == "multi_label_classification"
    assert run["model"].config.class_weights == pytest.approx(pos_weight.tolist())
    with torch.no_grad():
        loss = run["model"](**run["inputs"], labels=run["truth"]).loss
    expected = F.binary_cross_entropy_with_logits(run["logits"], run["truth"], pos_weight=pos_weight)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(F.binary_cross_entropy_with_logits(run["logits"], run["truth"]).item())
