"""End to end: the captioning recipe (its default preset, then these flags) with tiny towers and a user's own tiny
decoder folder (a random Llama with a BERT tokenizer) on a few scenes, run in this process on one thread as a
1-process `accelerate launch` runs it (the launch itself is what the acceptance run does); then the saved folder
through the Auto classes, `mmft predict` and `pipeline("mmft-image-to-text")`, which must all write the run's
captions."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from helpers_captioning import save_tiny_decoder, scenes_rows
from helpers_launch import REPO, tiny_tower_flags
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

import mmft  # noqa: F401  (registers the Auto classes and pipelines)
from mmft.arguments import parse_recipe_args
from mmft.cli import main
from mmft.training import run as run_recipe

pytestmark = pytest.mark.e2e
EVAL_ROWS = 6
PRESET = REPO / "recipes" / "configs" / "scenes_captioning.yaml"  # what recipes/captioning.py reads first


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_text_dir):
    root = tmp_path_factory.mktemp("captioning")
    decoder = save_tiny_decoder(root / "my_decoder")
    output = root / "out"
    argv = [
        *tiny_tower_flags(tiny_text_dir),
        "--decoder_model",
        str(decoder),
        "--num_query_tokens",
        "4",
        "--lora_vision",
        "lora",
        "--lora_decoder",
        "lora",
        "--lora_r",
        "4",
        "--max_train_samples",
        "16",
        "--max_eval_samples",
        str(EVAL_ROWS),
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--max_new_tokens",
        "6",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "2",
        "--disable_tqdm",
        "true",
        "--output_dir",
        str(output),
    ]
    log = io.StringIO()
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(log):
        patch.setenv("MMFT_CPU_THREADS", "1")  # what --num_cpu_threads_per_process 1 gives a launched run
        run_recipe("captioning", parse_recipe_args(argv, "captioning", default_config=str(PRESET)))
    torch.set_num_threads(threads)
    images, _ = scenes_rows(EVAL_ROWS)
    for index, image in enumerate(images[:2]):
        image.save(root / f"scene{index}.png")
    return {"root": root, "output": output, "log": log.getvalue(), "images": images}


def _written(output) -> list[dict]:
    return [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]


def test_run_writes_metrics_baselines_predictions_and_card(run):
    results = json.loads((run["output"] / "test_results.json").read_text())
    for key in (
        "test_bleu_4",
        "test_cider",
        "test_rouge_l",
        "test_cider_baseline_frequent",
        "test_cider_baseline_nearest",
        "test_bleu_4_baseline_nearest",
        "test_generated_tokens_per_second",
    ):
        assert key in results, key
    assert (results["test_num_images"], results["test_num_captions"]) == (EVAL_ROWS, 5 * EVAL_ROWS)
    written = _written(run["output"])
    assert len(written) == EVAL_ROWS and set(written[0]) == {"image", "caption", "references"}
    assert written[0]["references"] == scenes_rows(1)[1][0]  # the first test scene's five captions
    card = (run["output"] / "README.md").read_text()
    assert "pipeline_tag: image-to-text" in card and "caption decoder" in card and "baseline_nearest" in card
    assert "decoder: pretrained" in run["log"]  # the user's folder is named as the decoder's source


def test_reloaded_model_writes_the_runs_captions(run):
    model = AutoModelForImageTextToText.from_pretrained(run["output"]).eval()
    processor = AutoProcessor.from_pretrained(run["output"])
    with torch.no_grad():
        ids = model.generate(**processor(images=run["images"]), max_new_tokens=6)
    assert processor.decode_captions(ids) == [row["caption"] for row in _written(run["output"])]


def test_cli_and_pipeline_print_the_same_caption(run, capsys):
    image = run["root"] / "scene0.png"
    expected = _written(run["output"])[0]["caption"]  # PNG round trip is lossless
    assert (
        main(
            [
                "predict",
                "--model",
                str(run["output"]),
                "--task",
                "captioning",
                "--image",
                str(image),
                "--max_new_tokens",
                "6",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == expected
    caption = pipeline("mmft-image-to-text", model=str(run["output"]))
    assert caption(str(image), max_new_tokens=6) == [{"generated_text": expected}]
    rows = run["root"] / "rows.jsonl"
    rows.write_text("".join(json.dumps({"image": f"scene{i}.png"}) + "\n" for i in range(2)))
    out = run["root"] / "predicted.jsonl"
    assert (
        main(
            [
                "predict",
                "--model",
                str(run["output"]),
                "--dataset",
                str(rows),
                "--output",
                str(out),
                "--max_new_tokens",
                "6",
                "--batch_size",
                "2",
            ]
        )
        == 0
    )
    assert [json.loads(line)["caption"] for line in out.read_text().splitlines()] == [
        row["caption"] for row in _written(run["output"])[:2]
    ]
