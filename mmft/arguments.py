"""Recipe arguments: `HfArgumentParser` dataclasses, read from a YAML preset with command-line overrides."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments


@dataclass
class ModelArguments:
    """Which towers to join, and how."""

    vision_model: str = field(
        default="timm:resnet10t",
        metadata={"help": "timm:<arch> (random init), a Hub id (HF or timm/...), or a local folder"},
    )
    vision_model_args: str | None = field(
        default=None, metadata={"help": 'JSON kwargs for timm.create_model, e.g. {"img_size": 64}'}
    )
    text_model: str = field(default="minilm", metadata={"help": "a Hub id, a local folder, or the offline alias 'minilm'"})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "continue from a saved mmft model folder instead of joining two towers"}
    )
    eval_only: bool = field(default=False, metadata={"help": "skip training: evaluate --model_name_or_path only"})
    bridge: str = field(default="co_attention", metadata={"help": "co_attention | cross_attention | concat | product"})
    num_bridge_layers: int = 2
    hidden_size: int = 256
    num_attention_heads: int = 4
    hidden_dropout: float = 0.1
    image_size: int | None = field(default=None, metadata={"help": "resize images to this square size"})
    max_question_length: int = 64
    cache_frozen_text: bool = field(
        default=True, metadata={"help": "memoise a frozen text tower's output per distinct question"}
    )

    def timm_args(self) -> dict[str, Any] | None:
        if not self.vision_model_args:
            return None
        try:
            return json.loads(self.vision_model_args)
        except json.JSONDecodeError as error:
            raise ValueError(f"--vision_model_args is not valid JSON: {error.msg}: {self.vision_model_args!r}") from None


@dataclass
class DataArguments:
    """Which data, and how much of it."""

    dataset: str = field(default="easy_vqa", metadata={"help": "easy_vqa, vqav2, a local folder, or a Hub dataset id"})
    train_split: str = "train"
    eval_split: str | None = field(default=None, metadata={"help": "default: the first of test/validation/val"})
    image_column: str = "image"
    question_column: str = "question"
    answers_column: str = "answers"
    questions_file: str | None = None
    annotations_file: str | None = None
    image_dir: str | None = None
    eval_questions_file: str | None = None
    eval_annotations_file: str | None = None
    eval_image_dir: str | None = None
    top_k_answers: int = field(default=3129, metadata={"help": "answer vocabulary size (most frequent answers)"})
    max_train_samples: int | None = None
    max_eval_samples: int | None = None


@dataclass
class LoraArguments:
    """How to fine-tune each tower (see `mmft.LoraPlan`)."""

    lora_vision: str = field(default="full", metadata={"help": "lora | full | frozen"})
    lora_text: str = field(default="frozen", metadata={"help": "lora | full | frozen"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = field(default="attention", metadata={"help": "attention | attention+mlp"})
    save_merged: bool = field(default=True, metadata={"help": "save LoRA merged into a plain model (else the adapter)"})


@dataclass
class OutputArguments:
    """What the run writes besides the model: throughput logs, plots, model card (see `mmft.callbacks`)."""

    throughput: bool = field(default=True, metadata={"help": "log samples/s, tokens/s, FLOPs per step and MFU"})
    peak_flops: float | None = field(
        default=None, metadata={"help": "peak FLOP/s of one device for MFU (default: mmft.callbacks table / CPU probe)"}
    )
    plots: bool = field(default=True, metadata={"help": "PNG plots of loss, learning rate, eval metrics in output_dir"})
    model_card: bool = field(default=True, metadata={"help": "write README.md (Hub model card) in output_dir"})


ARGUMENT_CLASSES = (ModelArguments, DataArguments, LoraArguments, TrainingArguments, OutputArguments)


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2 :]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    return None, argv


def parse_recipe_args(
    argv: list[str] | None = None, default_config: str | None = None
) -> tuple[ModelArguments, DataArguments, LoraArguments, TrainingArguments, OutputArguments]:
    """Parse `--config preset.yaml` (keys are flag names) then the command line, which overrides the preset."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, argv = _split_config_flag(argv)
    config_path = config_path or default_config
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise FileNotFoundError(f"--config {config_path}: no such file")
        preset = yaml.safe_load(path.read_text()) or {}
        if not isinstance(preset, dict):
            raise ValueError(f"{config_path}: expected a mapping of flag names to values, got {type(preset).__name__}")
        known = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)}
        unknown = sorted(set(preset) - known)
        if unknown:
            raise ValueError(f"{config_path}: unknown key(s) {unknown}; every key must be a recipe flag name")
        # Feed the preset through the same argparse types as the command line so a wrong type fails the same way.
        argv = [token for key, value in preset.items() for token in _as_flag(key, value)] + argv
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def _as_flag(key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (dict, list)) and key != "vision_model_args":
        return [f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", json.dumps(value)]
    return [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
