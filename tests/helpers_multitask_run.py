"""Tiny local data and a tiny preset for multi-task recipe runs (recipes/multitask.py, `mmft.multitask_training`).

Three tasks on users' layouts: VQA from an imagefolder with `metadata.jsonl`, classification from an imagefolder of
true/false statements, retrieval from `{train,test}.csv` image,caption pairs; the preset is written as a user would
write it (shared flags + a `tasks:` mapping), with the test suite's tiny towers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import yaml
from helpers_data import make_imagefolder, pair_captions, write_pair_images
from helpers_launch import tiny_tower_flags
from test_e2e_classification import make_entailment_folder


def make_pairs_csv(root: Path, n_train: int = 8, n_test: int = 4, per_image: int = 2) -> Path:
    """`root/{train,test}.csv` with one image,caption row per pair, images under `root/images/`."""
    for split, n in (("train", n_train), ("test", n_test)):
        names = write_pair_images(root / "images", split, n)
        with (root / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "caption"])
            for i, name in enumerate(names):
                writer.writerows([f"images/{name}", caption] for caption in pair_captions(i, per_image))
    return root


def make_task_data(root: Path) -> dict[str, Path]:
    """Each task's tiny dataset folder: 16 training rows for VQA, 16 for classification, 16 pairs for retrieval."""
    return {
        "vqa": make_imagefolder(root / "vqa", n_train=16, n_test=8),
        "classification": make_entailment_folder(root / "cls", n_train=16, n_test=8),
        "retrieval": make_pairs_csv(root / "pairs", n_train=8, n_test=4),
    }


def tower_flags(text_dir: Path) -> dict[str, object]:
    """`tiny_tower_flags` as preset keys."""
    tokens = tiny_tower_flags(text_dir)
    return {tokens[i][2:]: tokens[i + 1] for i in range(0, len(tokens), 2)}


def write_preset(
    path: Path,
    text_dir: Path,
    data: dict[str, Path],
    output_dir: Path,
    tasks: dict[str, dict] | None = None,
    **shared: object,
) -> Path:
    """A multi-task preset: tiny towers, batch 4, `max_steps` 6, no evaluation or checkpoints, logs every step;
    `tasks` entries (default: every task of `data` on its folder) and `shared` keys override."""
    flags = {
        **tower_flags(text_dir),
        "lora_vision": "full",
        "lora_text": "full",
        "hidden_dropout": 0.0,
        "output_dir": str(output_dir),
        "task_sampling": "round_robin",
        "max_steps": 6,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "seed": 0,
        **shared,
        "tasks": tasks if tasks is not None else {name: {"dataset": str(folder)} for name, folder in data.items()},
    }
    path.write_text(yaml.safe_dump(flags, sort_keys=False))
    return path
