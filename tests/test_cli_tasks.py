"""`mmft` commands know the task of the model they are given: each serves the tasks that declare it
(`Task.commands`) and refuses the others in one sentence, and `predict --dataset` reads each task's own rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import IMAGE_SIZE, TINY_TIMM_CNN, tiny_model
from helpers_captioning import tiny_caption_model, tiny_caption_processor
from helpers_data import make_caption_folder, make_parquet_hub_layout
from PIL import Image
from test_retrieval import tiny_retrieval
from transformers import pipeline

from mmft import MMFTProcessor
from mmft.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_tasks")
    processor = MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", IMAGE_SIZE, TINY_TIMM_CNN)
    for name, model, model_processor in (
        ("vqa", tiny_model("co_attention", "timm_cnn"), processor),
        ("retrieval", tiny_retrieval(), processor),
        ("captioning", tiny_caption_model(), tiny_caption_processor()),
    ):
        model.save_pretrained(root / name)
        model_processor.save_pretrained(root / name)
    Image.new("RGB", (32, 32), "red").save(root / "red.png")
    return {"root": root, **{name: root / name for name in ("vqa", "retrieval", "captioning")}}


def test_explain_refuses_a_captioning_model_in_one_sentence(saved, tmp_path, capsys):
    out = tmp_path / "heat.png"
    with pytest.raises(SystemExit) as refused:
        main(
            [
                "explain",
                "--model",
                str(saved["captioning"]),
                "--image",
                str(saved["root"] / "red.png"),
                "--text",
                "what is it?",
                "--out",
                str(out),
            ]
        )
    assert str(refused.value) == (
        f"mmft explain: {saved['captioning']} holds a 'captioning' model; `mmft explain` "
        "works for vqa, classification models only (this one serves: mmft predict)"
    )
    assert not out.exists()


def test_search_refuses_a_vqa_model_naming_what_it_serves(saved):
    with pytest.raises(
        SystemExit,
        match=r"holds a 'vqa' model; `mmft search` works for retrieval models only "
        r"\(this one serves: mmft predict, mmft explain\)",
    ):
        main(
            [
                "search",
                "--model",
                str(saved["vqa"]),
                "--image",
                str(saved["root"] / "red.png"),
                "--captions",
                str(saved["root"] / "none.txt"),
            ]
        )


def test_predict_on_a_caption_folder_scores_every_image_caption_pair(saved, tmp_path):
    """A retrieval model over the eval split of a caption imagefolder: one record per (image, caption) pair, each
    with the matching pipeline's own scores for that pair."""
    data = make_caption_folder(tmp_path / "captions", n_train=4, n_test=5)
    output = tmp_path / "predictions.jsonl"
    assert (
        main(
            [
                "predict",
                "--model",
                str(saved["retrieval"]),
                "--dataset",
                str(data),
                "--output",
                str(output),
                "--batch_size",
                "3",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    rows = [json.loads(line) for line in (data / "test" / "metadata.jsonl").read_text().splitlines()]
    expected_pairs = [
        (row["file_name"], caption) for row in rows for caption in row.get("captions", [row.get("caption")])
    ]
    assert [(Path(r["image"]).name, r["caption"]) for r in records] == expected_pairs
    match = pipeline("mmft-image-text-retrieval", model=str(saved["retrieval"]))
    for record in records[:3]:
        expected = match(image=str(data / "test" / Path(record["image"]).name), text=record["caption"])
        assert record["prediction"] == expected[0]["label"]
        assert [s["score"] for s in record["labels_scored"]] == pytest.approx([s["score"] for s in expected], abs=1e-5)


@pytest.mark.parametrize("task", ["vqa", "retrieval", "captioning"])
def test_predict_records_of_every_task_share_image_and_prediction(task, saved, tmp_path):
    """One JSONL schema: each record repeats its row (with the image's path) and adds the task's `prediction`."""
    source = tmp_path / "rows.jsonl"
    source.write_text(
        json.dumps(
            {"image": str(saved["root"] / "red.png"), "question": "what colour?", "text": "a red square", "id": 7}
        )
        + "\n"
    )
    output = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(saved[task]), "--dataset", str(source), "--output", str(output)]) == 0
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert record["id"] == 7 and record["image"] == str(saved["root"] / "red.png")
    assert isinstance(record["prediction"], str) and record["prediction"]


def _karpathy_json(folder: Path, path: Path) -> Path:
    """A caption imagefolder's test rows as a Karpathy-split JSON (every image under `folder/test`)."""
    rows = [json.loads(line) for line in (folder / "test" / "metadata.jsonl").read_text().splitlines()]
    images = [
        {
            "filepath": "test",
            "filename": row["file_name"],
            "split": "test",
            "sentences": [{"raw": c} for c in row.get("captions", [row.get("caption")])],
        }
        for row in rows
    ]
    path.write_text(json.dumps({"images": images}))
    return path


@pytest.mark.parametrize("task", ["retrieval", "captioning"])
def test_predict_dataset_takes_the_recipes_coco_json_flags(task, saved, tmp_path):
    """`--dataset coco_json` with the caption recipes' `--captions_file` / `--image_dir` (a file with a test split
    only: no training split is needed); retrieval scores each (image, caption) pair, captioning each image."""
    data = make_caption_folder(tmp_path / "captions", n_train=1, n_test=3)
    karpathy = _karpathy_json(data, tmp_path / "dataset_coco.json")
    output = tmp_path / "out.jsonl"
    flags = ["--dataset", "coco_json", "--captions_file", str(karpathy), "--image_dir", str(data)]
    assert main(["predict", "--model", str(saved[task]), *flags, "--output", str(output)]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    pairs = sum(len(image["sentences"]) for image in json.loads(karpathy.read_text())["images"])
    assert len(records) == (pairs if task == "retrieval" else 3)
    assert all(Path(r["image"]).parent == data / "test" and r["prediction"] for r in records)


def test_predict_dataset_maps_hub_columns_and_refuses_a_flag_of_another_task(saved, tmp_path):
    hub = make_parquet_hub_layout(tmp_path / "hub", n_train=2, n_test=3)
    output = tmp_path / "out.jsonl"
    mapping = ["--image_column", "img", "--question_column", "query", "--answers_column", "label"]
    assert (
        main(["predict", "--model", str(saved["vqa"]), "--dataset", str(hub), *mapping, "--output", str(output)]) == 0
    )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["question"] for r in records] == ["what color is the shape?"] * 2 + ["is the shape red?"]
    with pytest.raises(SystemExit, match=r"captions_file"):
        main(["predict", "--model", str(saved["vqa"]), "--dataset", str(hub), "--captions_file", "x.json"])
