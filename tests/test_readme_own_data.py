"""The README's "Fine-tune on your own data" runs as written: each layout it shows is built here under the name it
uses, and each command runs from the folder holding it, with the only added flags those that swap the Hub towers for
tiny local ones (this machine is offline). What each run writes is then read back."""

from __future__ import annotations

import csv
import json
import re
import runpy
import shlex
from pathlib import Path

import pytest
import yaml
from helpers_captioning import save_tiny_decoder
from helpers_data import pair_captions, rows, write_image, write_pair_images
from helpers_launch import TIMING_KEYS, tiny_tower_flags

from mmft.cli import main as mmft_main

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Fine-tune on your own data\n"


def _commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + 1)]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


# -- the layouts the section shows, under its names ---------------------------------------------------------------
def _vqa_table(root: Path) -> None:
    """my_vqa/{train,test}.csv (image,question,answers), answers cells as a JSON list, `|`-separated or one."""
    (root / "images").mkdir(parents=True)
    for split, n in (("train", 16), ("test", 8)):
        with (root / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "question", "answers"])
            for i, row in enumerate(rows(n)):
                name = f"images/{split}_{i}.png"
                write_image(root / name, row["colour"])
                answer = row["answer"]
                cell = (json.dumps([answer] * 4), "|".join([answer] * 4), answer)[i % 3]
                writer.writerow([name, row["question"], cell])


def _train_only_imagefolder(root: Path) -> None:
    """my_memes/train/metadata.jsonl (file_name, text, label) and nothing else."""
    folder = root / "train"
    folder.mkdir(parents=True)
    with (folder / "metadata.jsonl").open("w") as handle:
        for i in range(30):
            colour = ("red", "blue")[i % 2]
            write_image(folder / f"{i:04d}.png", colour)
            said = ("red", "blue")[(i // 2) % 2]
            label = "true" if said == colour else "false"
            handle.write(json.dumps({"file_name": f"{i:04d}.png", "text": f"the square is {said}", "label": label}))
            handle.write("\n")


def _flickr_pairs(root: Path) -> None:
    """my_pairs/{train,test}.csv: one image,caption row per pair, five rows per image, images under images/."""
    for split, n in (("train", 10), ("test", 4)):
        names = write_pair_images(root / "images", split, n)
        with (root / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "caption"])
            for i, name in enumerate(names):
                writer.writerows([f"images/{name}", caption] for caption in pair_captions(i))


def _coco_captions(root: Path) -> None:
    """COCO's own layout: coco/annotations/captions_{train,val}2017.json, images in coco/train2017 and coco/val2017."""
    (root / "annotations").mkdir(parents=True)
    for split, n in (("train2017", 10), ("val2017", 4)):
        names = write_pair_images(root / split, split, n)
        images = [{"id": i, "file_name": name} for i, name in enumerate(names)]
        annotations = [
            {"id": 10 * i + k, "image_id": i, "caption": caption}
            for i in range(n)
            for k, caption in enumerate(pair_captions(i, 2))
        ]
        path = root / "annotations" / f"captions_{split}.json"
        path.write_text(json.dumps({"images": images, "annotations": annotations}))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_text_dir):
    """A user's folder with the four layouts; the recipes' outputs land in its outputs/."""
    root = tmp_path_factory.mktemp("user")
    _vqa_table(root / "my_vqa")
    _train_only_imagefolder(root / "my_memes")
    _flickr_pairs(root / "my_pairs")
    _coco_captions(root / "coco")
    decoder = save_tiny_decoder(tmp_path_factory.mktemp("tiny_decoder"))
    return root, tiny_tower_flags(tiny_text_dir), ["--decoder_model", str(decoder)]


def _run(command: str, towers: list[str], decoder: list[str]) -> int:
    words = shlex.split(command)
    if words[:2] == ["accelerate", "launch"]:
        recipe = runpy.run_path(str(REPO / words[2]), run_name="readme")  # TASK and DEFAULT_PRESET, as launched
        extra = towers + (decoder if recipe["TASK"] == "captioning" else [])
        return recipe["main"](recipe["TASK"], words[3:] + extra, str(recipe["DEFAULT_PRESET"]))
    assert words[0] == "mmft", command
    return mmft_main(words[1:])


def test_the_section_shows_a_layout_and_command_per_task():
    recipes = {shlex.split(c)[2] for c in _commands() if c.startswith("accelerate launch")}
    assert recipes == {f"recipes/{task}.py" for task in ("vqa", "classification", "retrieval", "captioning")}
    assert any(c.startswith("mmft evaluate") for c in _commands())


def test_every_command_runs_as_written(workspace, monkeypatch):
    root, towers, decoder = workspace
    monkeypatch.chdir(root)
    for command in _commands():
        assert _run(command, towers, decoder) == 0, command
    outputs = root / "outputs"
    written = {path.name for path in outputs.iterdir()}
    assert written == {"my_vqa-vqa", "my_memes-classification", "my_pairs-retrieval", "coco-captioning"}
    for run in outputs.iterdir():
        flags = yaml.safe_load((run / "run_config.yaml").read_text())
        # The task's real-data defaults, never the demo preset's keys (max_steps, a from-scratch stem, no eval).
        assert "max_steps" not in flags and flags["eval_strategy"] == "epoch" and flags["load_best_model_at_end"]
        state = json.loads(next(run.glob("checkpoint-*/trainer_state.json")).read_text())
        assert state["best_model_checkpoint"] and state["epoch"] <= 3.0
        assert (run / "model.safetensors").is_file() and (run / "test_results.json").is_file()

    vqa = json.loads((outputs / "my_vqa-vqa" / "test_results.json").read_text())
    assert "test_accuracy" in vqa
    evaluated = json.loads((outputs / "my_vqa-vqa" / "eval" / "my_vqa-test" / "eval_results.json").read_text())
    assert {k: v for k, v in evaluated.items() if k not in TIMING_KEYS} == {
        k: v for k, v in vqa.items() if k not in TIMING_KEYS
    }  # `mmft evaluate` gives the training run's test metrics

    # classification: 30 images, validation and test carved (10% of the images each, 3 + 3), 24 left to train on
    memes = outputs / "my_memes-classification"
    assert len((memes / "predictions.jsonl").read_text().splitlines()) == 3
    assert "test_accuracy" in json.loads((memes / "test_results.json").read_text())

    pairs = json.loads((outputs / "my_pairs-retrieval" / "test_results.json").read_text())
    assert (pairs["test_num_images"], pairs["test_num_captions"]) == (4, 20)  # five rows per image, grouped

    captions = json.loads((outputs / "coco-captioning" / "test_results.json").read_text())
    assert "test_cider" in captions
