"""The one training path of every task: data -> model -> LoRA plan -> `Trainer` -> evaluate -> save, card, push.

`run(task, args)` is what `recipes/<task>.py` call. Each step is a short function; what differs between tasks is
asked of the task (`mmft.tasks.base.Task`), never branched on here. Splits: the model trains on train, is evaluated
during training on the validation split (model selection, `eval_*` metrics) and scored once at the end, on the
selected model, on the test split (`test_*` metrics, `test_results.json`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

from .arguments import (
    LoraArguments,
    ModelArguments,
    OutputArguments,
    RecipeArguments,
    SelectionArguments,
    parse_recipe_args,
)
from .atomic import atomic_path
from .callbacks import AugmentationEpochCallback, ModelCardCallback, build_callbacks, log_before_reporters
from .checkpoints import choose_checkpoint
from .data import BadExamplePolicy, DataError, excluded_eval_positions
from .data.augment import make_augmentation
from .data.collator import set_train_augmentation
from .demo.space import write_space
from .fingerprint import arguments_fingerprint, check_same_run, fingerprint_id, run_fingerprint
from .guards import NonFiniteLossGuard, check_output_dir, padded_batches_warning
from .hub import full_parameters, push_output_dir, save_final
from .lora import LoraPlan, fsdp_launch
from .processing_mmft import MMFTProcessor
from .selection import evaluates_during_training, select_by_main_metric
from .stream_trainer import trainer_class
from .tasks import Task, TaskData, get_task
from .towers import TowerUnavailable, present_specs
from .unwrap import task_model

logger = logging.getLogger("mmft")
CPU_THREADS_ENV = "MMFT_CPU_THREADS"


def tower_provenance(config) -> str:
    """One line saying where each tower's weights came from; from-scratch towers are named as such."""
    return "; ".join(f"{spec.label}: {spec.provenance(config)}" for spec in present_specs(config))


def use_cpu_cores(training_args: TrainingArguments) -> int:
    """On a CPU, give this process its share of the machine's cores; returns the thread count used.

    `accelerate launch` without a config (or `--num_cpu_threads_per_process`) starts CPU processes with one thread
    (OMP_NUM_THREADS=1), which halves the speed of the offline defaults on a 2-core machine. A larger count given by
    the user is kept; `MMFT_CPU_THREADS=N` sets it outright.
    """
    if training_args.device.type != "cpu":
        return torch.get_num_threads()
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // local_processes)
    wanted = int(os.environ.get(CPU_THREADS_ENV, "0")) or max(torch.get_num_threads(), share)
    if wanted != torch.get_num_threads():
        logger.warning(
            "mmft: this CPU process had %d thread(s); using %d (%d cores / %d process(es) on this machine). Choose "
            "with `accelerate launch --num_cpu_threads_per_process N` or %s=N",
            torch.get_num_threads(),
            wanted,
            cores,
            local_processes,
            CPU_THREADS_ENV,
        )
        torch.set_num_threads(wanted)
    return wanted


def sharded_parameters(training_args: TrainingArguments) -> bool:
    """Whether this launch splits every weight across the processes (DeepSpeed ZeRO-3, FSDP); says so when it does.

    Then each process gathers a layer's weights from the others (a collective) whenever it runs that layer, so every
    process must run the same layers. The frozen-text cache breaks that: a process whose questions are all cached skips
    the text tower while another runs it, which then waits in its all-gather forever (seen with ZeRO-3 on 2 CPU
    processes: a hang at step 3). So the cache stays off there.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    sharded = is_deepspeed_zero3_enabled() or bool(training_args.fsdp) or fsdp_launch()
    if sharded:
        logger.warning(
            "mmft: --cache_frozen_text is off: with sharded weights (DeepSpeed ZeRO-3 / FSDP) every "
            "process must run the text tower at every step"
        )
    return sharded


def make_plan(lora_args: LoraArguments) -> LoraPlan:
    """The recipe's `LoraPlan` from its LoRA flags (`parse_recipe_args(...).lora`)."""
    return LoraPlan(
        vision=lora_args.lora_vision,
        text=lora_args.lora_text,
        decoder=lora_args.lora_decoder,
        r=lora_args.lora_r,
        alpha=lora_args.lora_alpha,
        dropout=lora_args.lora_dropout,
        targets=lora_args.lora_targets,
        quantize=lora_args.lora_quantize,
    )


def load_saved_model(task: Task, model_args: ModelArguments):
    """(model, processor) of a saved mmft folder; safetensors only (a pickled .bin is never unpickled)."""
    model = task.model_class.from_pretrained(model_args.model_name_or_path, use_safetensors=True)
    return model, MMFTProcessor.from_pretrained(model_args.model_name_or_path)


def tower_and_bridge_kwargs(model_args: ModelArguments) -> dict[str, Any]:
    """The arguments of `from_vision_text_pretrained` that the model flags give: towers, bridge and its widths."""
    return dict(
        vision=model_args.vision_model,
        text=model_args.text_model,
        vision_model_args=model_args.timm_args(),
        text_model_args=model_args.text_args(),
        bridge=model_args.bridge,
        num_bridge_layers=model_args.num_bridge_layers,
        hidden_size=model_args.hidden_size,
        num_attention_heads=model_args.num_attention_heads,
        hidden_dropout=model_args.hidden_dropout,
        bridge_attn_implementation=model_args.bridge_attn_implementation,
    )


def build_model(task: Task, model_args: ModelArguments, data: TaskData, **config_overrides: Any):
    """A fresh (model, processor) from two towers, with the head the task's data asks for.

    `config_overrides`: further `MMFTConfig` fields (e.g. `initializer_range`).
    """
    model = task.model_class.from_vision_text_pretrained(
        **tower_and_bridge_kwargs(model_args),
        **task.model_kwargs(data),
        **task.config_updates(data),
        **config_overrides,
    )
    processor = task.build_processor(model_args)
    task.bind(model, processor)
    return model, processor


def prepare(task: Task, args: RecipeArguments, policy: BadExamplePolicy | None = None, **config_overrides: Any):
    """(data, model, processor) with transforms attached: a saved model's labels fix the data's, else the data's
    labels shape a fresh model's head."""
    saved = load_saved_model(task, args.model) if args.model.model_name_or_path else None
    labels = task.labels_of(saved[0].config) if saved else None
    data = task.prepare_data(
        args.data,
        policy,
        labels,
        args.data.max_train_samples,
        args.data.max_eval_samples,
        evaluates_during_training(args),
        args.training.seed,
    )
    if saved:
        model, processor = saved
        for key, value in task.config_updates(data).items():
            setattr(model.config, key, value)
    else:
        model, processor = build_model(task, args.model, data, **config_overrides)
    processor.max_length = args.model.max_text_length  # saved with it: inference truncates as training did
    task.attach(data, processor, policy)
    return data, model, processor


def metrics_of(task: Task, data: TaskData, config, policy: BadExamplePolicy | None) -> Callable | None:
    """The Trainer's `compute_metrics` for `data.eval` (the test split, or the validation split in
    `data.for_validation()`): its references, and the rows the bad-example policy left out of it."""
    rows = data.eval.with_format(None)["row"]
    return task.compute_metrics(data, config.id2label, lambda: excluded_eval_positions(policy, rows, data.scored))


def make_trainer(
    task: Task,
    args: RecipeArguments,
    data: TaskData,
    model,
    processor,
    plan: LoraPlan,
    policy: BadExamplePolicy,
    callbacks: list | None = None,
    fingerprint: dict | None = None,
) -> Trainer:
    """The `MMFTTrainer` with the task's collator and metrics, mmft's callbacks and the NaN guard; `fingerprint`
    goes into every checkpoint. It evaluates on the validation split (none: it cannot evaluate during training),
    through the task's own `evaluate` where it has one, and stops early under `--early_stopping_patience`."""
    # The transform needs the raw columns; the Trainer must not prune them.
    args.training.remove_unused_columns = False
    config = task_model(model).config
    validation = data.for_validation() if data.validation is not None else None
    evaluator = None
    if validation is not None and task.evaluates_itself:

        def evaluator(trainer: Trainer, prefix: str) -> dict[str, float]:
            return task.evaluate(trainer, validation, prefix).metrics

    patience = (args.selection or SelectionArguments()).early_stopping_patience
    trainer = trainer_class(data.train)(  # a streamed training split gets the StreamingTrainer
        model=model,
        args=args.training,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=task.collator(processor, args.model.max_text_length),
        processing_class=processor,
        compute_metrics=metrics_of(task, validation, config, policy) if validation is not None else None,
        preprocess_logits_for_metrics=task.preprocess_logits_for_metrics,
        callbacks=[
            *(callbacks or []),
            *build_callbacks(args.output or OutputArguments(), args.data.dataset or task.default_dataset, plan),
            *([EarlyStoppingCallback(patience)] if patience is not None else []),
            NonFiniteLossGuard(),
        ],
        fingerprint=fingerprint,
        tower_learning_rate=args.lora.tower_learning_rate,
        layer_decay=args.lora.layer_decay,
        evaluator=evaluator,
    )
    log_before_reporters(trainer)
    return trainer


def score_test(task: Task, trainer: Trainer, data: TaskData, policy: BadExamplePolicy | None):
    """The test split scored once, on the model the run ends with (the best checkpoint's under
    `--load_best_model_at_end`): the task's `evaluate` with the prefix "test"."""
    trainer.compute_metrics = metrics_of(task, data, task_model(trainer.model).config, policy)
    return task.evaluate(trainer, data, "test")


def train(trainer: Trainer, training_args: TrainingArguments, resume: str | None = None) -> None:
    """Train, from the checkpoint `resume` when given (see `choose_checkpoint`)."""
    sized = hasattr(trainer.train_dataset, "__len__")  # a stream's processes each read their own share instead
    warning = padded_batches_warning(len(trainer.train_dataset), training_args) if sized else None
    if warning and trainer.is_world_process_zero():
        logger.warning(warning)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)


def write_predictions(path: Path, records: list[dict]) -> None:
    """One JSON object per eval row, written whole or not at all."""
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)


def save_outputs(
    task: Task,
    trainer: Trainer,
    data: TaskData,
    prediction,
    processor,
    lora_args: LoraArguments,
    policy: BadExamplePolicy,
) -> None:
    """Predictions, the final model and processor, test results, the task's extra files and the card (main process
    only), published together by `save_final`: a failed save leaves the previous ones."""
    config = task_model(trainer.model).config

    def extras(folder: Path, final) -> None:
        write_predictions(
            folder / "predictions.jsonl", task.prediction_records(data, prediction.predictions, config.id2label)
        )
        (folder / "test_results.json").write_text(json.dumps(prediction.metrics, indent=4, sort_keys=True) + "\n")
        task.after_evaluation(folder, data, prediction, config.id2label)
        for callback in trainer.callback_handler.callbacks:  # re-render the card now that test metrics exist
            if isinstance(callback, ModelCardCallback):
                callback.write(trainer.args, trainer.state, final, output_dir=folder)

    with full_parameters(trainer):  # ZeRO-3: gather the partitioned weights (all processes) before saving
        if not trainer.is_world_process_zero():
            return
        output_dir = Path(trainer.args.output_dir)
        save_final(trainer.model, processor, output_dir, merged=lora_args.save_merged, extras=extras)
        print(f"\nmmft: {tower_provenance(config)}")
        print(
            "mmft: final test metrics: "
            + ", ".join(f"{k}={v:.4f}" for k, v in prediction.metrics.items() if isinstance(v, float))
        )
        print(f"mmft: model, processor and test_results.json saved to {output_dir}")
        if policy.mode == "skip":
            print(f"mmft: {policy.summary()}")


def record_flags(args: RecipeArguments) -> None:
    """Main process: say which preset is in force and write the effective flags to `<output_dir>/run_config.yaml`
    (what `--config` replays)."""
    if args.flags is None or args.training.process_index != 0:
        return
    logger.warning("mmft: %s", args.flags.source)
    path = args.flags.write(args.training.output_dir)
    logger.warning("mmft: the effective flags are in %s (replay them with --config %s)", path, path)


def run(task: str | type[Task], args: RecipeArguments, callbacks: list | None = None) -> dict[str, float]:
    """Train `task` (unless `--eval_only`), selecting on the validation split when the run evaluates during training,
    score the test split once, save model + processor + metrics + card."""
    task = get_task(task)(args.task)
    training_args = args.training
    set_seed(training_args.seed)
    use_cpu_cores(training_args)
    check_output_dir(training_args.output_dir)  # a file or a read-only folder fails now, not after training
    identity = arguments_fingerprint(task.name, args)
    policy = BadExamplePolicy(
        args.data.on_bad_example,
        args.data.max_bad_fraction,
        os.path.join(training_args.output_dir, "rejects.jsonl"),
        args.data.dataset or task.default_dataset,
        run=fingerprint_id(identity),
    )
    resume = choose_checkpoint(
        training_args,
        None if args.model.eval_only else training_args.resume_from_checkpoint,
        (args.output or OutputArguments()).overwrite_output_dir,
        policy,
    )
    record_flags(args)
    plan = make_plan(args.lora)
    augmentation = make_augmentation(args.data.augment, args.data.augment_flip, training_args.seed)
    select_by_main_metric(task, args)
    data, model, processor = prepare(task, args, policy)
    set_train_augmentation(data.train, augmentation)
    if augmentation is not None:
        logger.warning("mmft: training-time augmentation %s", augmentation.describe())
        callbacks = [*(callbacks or []), AugmentationEpochCallback(augmentation)]
    sizes = {
        name: len(split) if hasattr(split, "__len__") else "streamed"  # a stream's length is unknown upfront
        for name, split in (("train", data.train), ("eval", data.eval), ("validation", data.validation))
        if split is not None
    }
    fingerprint = run_fingerprint(identity, model.config, sizes)
    if resume:
        check_same_run(resume, fingerprint)  # before any weight is loaded: another run's checkpoint is refused
    logger.warning("mmft: %s", tower_provenance(model.config))
    model = plan.apply(model)
    if args.model.cache_frozen_text and not sharded_parameters(training_args):
        task_model(model).core.enable_frozen_text_cache(args.model.frozen_text_cache_mb)
    trainer = make_trainer(task, args, data, model, processor, plan, policy, callbacks, fingerprint)
    if not args.model.eval_only:
        train(trainer, training_args, resume)
    prediction = score_test(task, trainer, data, policy)
    trainer.log_metrics("test", prediction.metrics)
    trainer.save_metrics("test", prediction.metrics)
    save_outputs(task, trainer, data, prediction, processor, args.lora, policy)
    if training_args.push_to_hub:
        push_output_dir(trainer, before_upload=write_space if (args.output or OutputArguments()).push_demo else None)
    return prediction.metrics


def _user_mistake(error: Exception) -> int:
    print(f"mmft: {error}", file=sys.stderr)
    return 2


def main(task: str, argv: list[str], default_config: str | None = None) -> int:
    """A recipe's entry point: parse `argv` over its starting point (`default_config`, the recipe's demo preset, on
    its demo dataset; see `parse_recipe_args`), then `run`. Exit status 0, or 2 with one sentence on stderr and no
    traceback for a user's mistake: flags or preset values that do not fit (a ValueError while parsing), data that
    cannot be trained on (`DataError`), or a tower that cannot be loaded here (`TowerUnavailable`, e.g. a Hub id
    offline)."""
    try:
        args = parse_recipe_args(argv, task, default_config=default_config)
    except ValueError as error:
        return _user_mistake(error)
    try:
        run(task, args)
    except (DataError, TowerUnavailable) as error:
        return _user_mistake(error)
    return 0


__all__ = [
    "build_model",
    "tower_and_bridge_kwargs",
    "load_saved_model",
    "main",
    "make_plan",
    "prepare",
    "record_flags",
    "run",
    "tower_provenance",
    "use_cpu_cores",
]
