"""The flags a run on a user's data starts from when it names no preset (`Task.real_data_defaults`), and the name
its output folder takes from the dataset."""

from __future__ import annotations

import os
import re
from typing import Any

# Where a run without a preset starts (`Task.real_data_defaults`): what a user with Hub access would pick for their own
# data. Pretrained towers (never one from scratch unless asked), epochs rather than steps, an evaluation and a
# checkpoint per epoch. `report_to` stays transformers' default (no integration unless asked for); `output_dir` comes
# from the dataset (`Task.output_dir_for`).
REAL_DATA_DEFAULTS: dict[str, Any] = {
    "vision_model": "google/vit-base-patch16-224-in21k",
    "text_model": "bert-base-uncased",
    "num_train_epochs": 3,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    # the new modules (bridge, projections, head) and LoRA adapters learn from scratch; a full tower only adapts
    "learning_rate": 1.0e-4,
    "tower_learning_rate": 2.0e-5,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.1,  # a fraction of the training steps
    "weight_decay": 0.01,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "load_best_model_at_end": True,  # selected on the validation split by the task's main metric (`selection_metric`)
    "logging_steps": 50,
}


def dataset_slug(dataset: str) -> str:
    """A dataset's name for a folder: a local folder's (or file's) own name, a Hub id with '/' as '_'."""
    name = os.path.basename(os.path.normpath(dataset)) if os.path.exists(dataset) else dataset.strip("./")
    name = os.path.splitext(name)[0] if os.path.isfile(dataset) else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "dataset"


__all__ = ["REAL_DATA_DEFAULTS", "dataset_slug"]
