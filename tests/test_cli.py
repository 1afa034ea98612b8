"""`mmft predict` / `mmft explain` on tiny saved models, through `python -m mmft.cli` and `main([...])` in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from PIL import Image
from transformers import pipeline

from mmft.cli import main
from mmft.explain import explain
from mmft.processing_mmft import MMFTProcessor

REPO = Path(__file__).resolve().parents[1]
QUESTION = "what color is the shape?"


def _save(path: Path, bridge: str) -> Path:
    model = tiny_model(bridge, "timm_cnn")
    model.config.problem_type = "single_label_classification"
    model.save_pretrained(path)
    MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for colour in ("red", "blue"):
        image = Image.new("RGB", (48, 48), "white")
        image.paste(Image.new("RGB", (16, 16), colour), (8, 24))
        image.save(root / f"{colour}.png")
    return {
        "root": root,
        "co_attention": _save(root / "co", "co_attention"),
        "concat": _save(root / "concat", "concat"),
    }


def _expected(folder: Path, image: Path) -> list[tuple[str, float]]:
    """Answers ranked by the model called directly (softmax over its logits)."""
    from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

    model = AutoModelForVisualQuestionAnswering.from_pretrained(folder).eval()
    inputs = AutoProcessor.from_pretrained(folder)(images=Image.open(image), text=QUESTION)
    with torch.no_grad():
        scores = model(**inputs).logits[0].softmax(-1)
    ranked = scores.argsort(descending=True)
    return [(model.config.id2label[int(i)], float(scores[i])) for i in ranked]


def test_predict_through_python_m_prints_ranked_answers(saved):
    image = saved["root"] / "red.png"
    command = [
        sys.executable,
        "-m",
        "mmft.cli",
        "predict",
        "--model",
        str(saved["co_attention"]),
        "--image",
        str(image),
        "--question",
        QUESTION,
        "--top_k",
        "3",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = [line.split("\t") for line in result.stdout.strip().splitlines()]
    expected = _expected(saved["co_attention"], image)[:3]
    assert [answer for _, answer in printed] == [answer for answer, _ in expected]
    assert [float(score) for score, _ in printed] == pytest.approx([score for _, score in expected], abs=1e-4)


def test_predict_dataset_to_jsonl_in_process(saved, tmp_path):
    rows = [
        {"image": "red.png", "question": QUESTION, "id": 1},
        {"image": str(saved["root"] / "blue.png"), "question": "is there a circle?", "id": 2},
    ]
    source = saved["root"] / "questions.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "predictions.jsonl"
    code = main(
        [
            "predict",
            "--model",
            str(saved["co_attention"]),
            "--dataset",
            str(source),
            "--output",
            str(output),
            "--top_k",
            "2",
            "--batch_size",
            "2",
        ]
    )
    assert code == 0
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert [w["id"] for w in written] == [1, 2]
    assert written[0]["prediction"] == _expected(saved["co_attention"], saved["root"] / "red.png")[0][0]
    assert all(len(w["answers_scored"]) == 2 and w["answers_scored"][0]["answer"] == w["prediction"] for w in written)


def test_transformers_pipeline_task(saved):
    vqa = pipeline("mmft-vqa", model=str(saved["co_attention"]))
    image = saved["root"] / "blue.png"
    expected = _expected(saved["co_attention"], image)
    answers = vqa(image=str(image), question=QUESTION, top_k=len(expected))
    assert [a["answer"] for a in answers] == [answer for answer, _ in expected]
    assert sum(a["score"] for a in answers) == pytest.approx(1.0, abs=1e-5)


def test_explain_writes_a_heatmap_per_layer(saved, tmp_path, capsys):
    out = tmp_path / "heat.png"
    image = saved["root"] / "red.png"
    code = main(
        [
            "explain",
            "--model",
            str(saved["co_attention"]),
            "--image",
            str(image),
            "--question",
            QUESTION,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.split("\t")[1].strip() == _expected(saved["co_attention"], image)[0][0]
    with Image.open(out) as png:
        png.verify()
    from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

    model = AutoModelForVisualQuestionAnswering.from_pretrained(saved["co_attention"]).eval()
    result = explain(model, AutoProcessor.from_pretrained(saved["co_attention"]), Image.open(image), QUESTION)
    assert len(result.maps) == model.config.num_bridge_layers
    assert result.maps[0].shape == (8, 8)  # the stride-4 resnet10t map of a 32 px image
    assert result.maps[0].sum() == pytest.approx(1.0, abs=1e-5)


def test_explain_refuses_a_bridge_without_attention(saved, tmp_path, capsys):
    code = main(
        [
            "explain",
            "--model",
            str(saved["concat"]),
            "--image",
            str(saved["root"] / "red.png"),
            "--question",
            QUESTION,
            "--out",
            str(tmp_path / "x.png"),
        ]
    )
    assert code == 2 and not (tmp_path / "x.png").exists()
    assert "bridge 'concat' has no cross-attention" in capsys.readouterr().err
