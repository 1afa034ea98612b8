"""The training path of a multi-task run: several tasks' data -> one `MMFTForMultiTask` -> one `Trainer` -> each task
scored and saved as its own single-task model, plus the joint model with every task's results.

`recipes/multitask.py` is `main(argv)`. A run is described by a preset (`--config`, default
`recipes/configs/multitask_easy_vqa_scenes.yaml`) whose keys are shared flags (towers, bridge, LoRA plan,
`TrainingArguments`: every task's recipe reads them) plus a `tasks:` mapping, one entry per task:

    tasks:
      vqa: {dataset: easy_vqa, loss_weight: 1.0, sampling_weight: 1.0}
      retrieval: {dataset: scenes, max_text_length: 32, rerank_k: 16}

A task's entry holds that task's own flags (its data, its task flags, its batch size: any flag of its recipe, over
the shared ones) and three weights of the joint run: `loss_weight` (its loss is multiplied by it), `sampling_weight`
(its share of the steps is multiplied by it; see `mmft.multitask.sampling`) and `selection_weight` (its main metric's
weight in the joint score that model selection reads). The multi-task flags (`MultiTaskArguments`) sit at the top
level. On the command line, `--flag value` overrides a shared flag for every task and `--<task>.<flag> value` one
task's flag. Each task is prepared by its own `Task` exactly as in its single-task recipe, so a task joins a run
with no code beyond its package.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml
from transformers import EarlyStoppingCallback, Trainer, set_seed

from .arguments import (
    SelectionArguments,
)
from .atomic import atomic_write_text
from .callbacks import build_callbacks, log_before_reporters
from .checkpoints import choose_checkpoint
from .data import BadExamplePolicy, DataError
from .fingerprint import arguments_fingerprint, check_same_run, run_fingerprint
from .guards import NonFiniteLossGuard, check_output_dir
from .hub import save_final
from .multitask import MMFTForMultiTask, MultiTaskStream, TaskSampler, task_draw_counts
from .multitask.trainer import JOINT_SCORE, JointTrainer
from .multitask_arguments import (
    DEFAULT_PRESET,
    MultiTaskArguments,
    MultiTaskRun,
    TaskPart,
    TaskWeights,
    parse_multitask_args,
)
from .selection import evaluates_during_training, select_by
from .towers import TowerUnavailable
from .training import (
    make_plan,
    make_trainer,
    save_outputs,
    score_test,
    sharded_parameters,
    tower_and_bridge_kwargs,
    use_cpu_cores,
)
from .unwrap import task_model

logger = logging.getLogger("mmft")


# -- the run ---------------------------------------------------------------------------------------------------------
def prepare_part(part: TaskPart, output_dir: str) -> None:
    """The task's data (validated, split, transforms attached) and processor, as its own recipe prepares them; its
    bad-example ledger is `<output_dir>/<task>/rejects.jsonl`."""
    args, task = part.args, part.task
    args.training.output_dir = os.path.join(output_dir, part.name)
    part.policy = BadExamplePolicy(
        args.data.on_bad_example,
        args.data.max_bad_fraction,
        os.path.join(args.training.output_dir, "rejects.jsonl"),
        args.data.dataset or task.default_dataset,
    )
    part.data = task.prepare_data(
        args.data,
        part.policy,
        None,
        args.data.max_train_samples,
        args.data.max_eval_samples,
        evaluates_during_training(args),
        args.training.seed,
    )
    if part.data.train is None or not hasattr(part.data.train, "__len__"):
        raise DataError(f"task {part.name}: a multi-task run trains on sized splits (--streaming is not supported)")
    part.processor = part.task.build_processor(args.model)
    part.processor.max_length = args.model.max_text_length


def build_model(run: MultiTaskRun) -> MMFTForMultiTask:
    """The joint model from the shared tower and bridge flags, with each task's head as its data asks for it."""
    heads = {p.name: {**p.task.model_kwargs(p.data), **p.task.config_updates(p.data)} for p in run.parts}
    model = MMFTForMultiTask.from_vision_text_pretrained(**tower_and_bridge_kwargs(run.shared.model), tasks=heads)
    for part in run.parts:
        part.task.bind(model.for_task(part.name), part.processor)
    return model


def evaluation_trainer(part: TaskPart, model: MMFTForMultiTask, plan) -> Trainer:
    """Task `part`'s own Trainer on the joint model's weights (`for_task`): its collator, metrics and evaluation, as
    its single-task recipe has them. It never trains; it scores the validation and test splits and saves the task's
    single-task model."""
    args = part.args
    args.training.eval_strategy = "no"  # its evaluations are called by the joint Trainer
    args.training.load_best_model_at_end = False
    return make_trainer(part.task, args, part.data, model.for_task(part.name), part.processor, plan, part.policy)


def select_by_joint_score(training, patience: int | None = None) -> None:
    """With `--load_best_model_at_end` or `--early_stopping_patience` and no `--metric_for_best_model`, select by
    `eval_joint_score` (higher is better), as a single-task run selects by its task's main metric (`mmft.selection`).
    transformers fills in "loss" when the flag is not given, and a joint evaluation has no `eval_loss` (each task's
    loss is `eval_<task>_loss`), so "loss" is taken as not given."""
    select_by(training, patience, f"eval_{JOINT_SCORE}", ("loss", "eval_loss"), "the tasks' validation splits")


def make_stream(run: MultiTaskRun) -> MultiTaskStream:
    """The batch stream: the sampler over the tasks' training rows, each task's collator and batch size."""
    training, multitask = run.shared.training, run.multitask
    sizes = {part.name: len(part.data.train) for part in run.parts}
    sampler = TaskSampler(
        sizes,
        multitask.task_sampling,
        temperature=multitask.task_temperature if multitask.task_sampling == "temperature" else None,
        weights=None
        if multitask.task_sampling == "round_robin"
        else {part.name: part.weights.sampling for part in run.parts},
        seed=training.seed,
    )
    logger.warning(
        "mmft: task sampling %s: %s",
        multitask.task_sampling,
        ", ".join(f"{name} {share:.3f}" for name, share in sampler.probabilities().items()),
    )
    return MultiTaskStream(
        {part.name: part.data.train for part in run.parts},
        {part.name: part.task.collator(part.processor, part.args.model.max_text_length) for part in run.parts},
        sampler,
        {part.name: part.args.training.per_device_train_batch_size for part in run.parts},
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        mix_within_step=multitask.mix_within_step,
        seed=training.seed,
    )


def find_unused_head_parameters(training) -> None:
    """Let DDP find the parameters a step leaves unused, unless the user chose (`--ddp_find_unused_parameters`).

    A step trains one task, so the other tasks' heads get no gradient and DDP, which waits for every parameter's,
    stops at the next step ("Expected to have finished reduction in the prior iteration"). The Trainer already looks
    for unused parameters by default, but not with gradient checkpointing, so the joint run asks for it always.
    """
    if training.ddp_find_unused_parameters is None:
        training.ddp_find_unused_parameters = True
        if training.world_size > 1 and training.process_index == 0:
            logger.warning("mmft: each step trains one task's head: DDP looks for unused parameters")


def joint_fingerprint(run: MultiTaskRun, model: MMFTForMultiTask) -> dict[str, Any]:
    """The joint run's fingerprint (`mmft.fingerprint`), written into each checkpoint and checked on resume: the
    multi-task flags, and per task its single-task fingerprint (flags, data, split sizes, its model's config) and
    weights."""
    tasks = {}
    for part in run.parts:
        splits = (("train", part.data.train), ("eval", part.data.eval), ("validation", part.data.validation))
        sizes = {name: len(split) for name, split in splits if split is not None}
        fingerprint = run_fingerprint(
            arguments_fingerprint(part.name, part.args), model.for_task(part.name).config, sizes
        )
        tasks[part.name] = {**fingerprint, "weights": asdict(part.weights)}
    return {"multitask": asdict(run.multitask), "tasks": tasks}


def sampling_record(stream: MultiTaskStream) -> dict[str, Any]:
    """How the run drew its tasks: the strategy, each task's training rows and share, and its draws (optimizer
    steps; micro-batches under `mix_within_step`)."""
    sampler = stream.sampler
    return {
        "strategy": sampler.strategy_name,
        "temperature": sampler.temperature,
        "rows": sampler.sizes,
        "shares": sampler.probabilities(),
        "draws": task_draw_counts(sampler, sampler.draws),
    }


# Evaluation timings (`test_vqa_runtime`, `..._samples_per_second`, `..._rerank_seconds`): not results of the model
TIMING_SUFFIXES = ("_runtime", "_per_second", "_seconds", "_preparation_time")


def joint_card(run: MultiTaskRun, metrics: dict[str, float], sampler: TaskSampler) -> str:
    """The joint model's card: its tasks, how they were sampled, and every task's test results."""
    lines = [
        "---",
        "library_name: transformers",
        "tags: [mmft, multi-task, vision-language]",
        "---",
        "",
        "# Multi-task mmft model",
        "",
        f"Shared towers and bridge with one head per task ({', '.join(p.name for p in run.parts)}), trained together "
        f"with `recipes/multitask.py` (task sampling `{run.multitask.task_sampling}`). Each task's single-task model "
        "(its Auto class, pipeline and `mmft predict` load it) is saved in the subfolder of the task's name; "
        "`MMFTForMultiTask.from_pretrained` loads the joint model and `for_task(name)` gives a task's model back.",
        "",
        "| task | dataset | share of steps | loss weight | test results |",
        "|---|---|---|---|---|",
    ]
    shares = sampler.probabilities()
    for part in run.parts:
        prefix = f"test_{part.name}_"
        results = ", ".join(
            f"{k[len(prefix) :]} {v:.4f}"
            for k, v in metrics.items()
            if k.startswith(prefix) and not k.endswith(TIMING_SUFFIXES)
        )
        dataset = part.args.data.dataset or part.task.default_dataset
        lines.append(
            f"| {part.name} | {dataset} | {shares[part.name]:.3f} | {part.weights.loss:g} | {results or 'n/a'} |"
        )
    return "\n".join(lines) + "\n"


def run(parsed: MultiTaskRun) -> dict[str, float]:
    """Train the joint model, score each task's test split on it, save each task's model and the joint one."""
    shared = parsed.shared.training
    output_dir = shared.output_dir
    set_seed(shared.seed)
    use_cpu_cores(shared)
    check_output_dir(output_dir)
    if shared.process_index == 0:
        path = Path(output_dir) / "run_config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, yaml.safe_dump(parsed.flags, sort_keys=False))
    for part in parsed.parts:
        prepare_part(part, output_dir)
    model = build_model(parsed)
    plan = make_plan(parsed.shared.lora)
    model = plan.apply(model)
    if parsed.shared.model.cache_frozen_text and not sharded_parameters(shared):
        task_model(model).core.enable_frozen_text_cache(parsed.shared.model.frozen_text_cache_mb)
    joint = task_model(model)
    for part in parsed.parts:
        part.task.attach(part.data, part.processor, part.policy)
        part.trainer = evaluation_trainer(part, joint, plan)
    stream = make_stream(parsed)
    fingerprint = joint_fingerprint(parsed, joint)
    resume = None
    if not parsed.shared.model.eval_only:
        resume = choose_checkpoint(
            shared, shared.resume_from_checkpoint, parsed.shared.output.overwrite_output_dir, parsed.parts[0].policy
        )
    if resume:
        check_same_run(resume, fingerprint)  # before any weight is loaded: another run's checkpoint is refused
    shared.remove_unused_columns = False
    find_unused_head_parameters(shared)
    patience = (parsed.shared.selection or SelectionArguments()).early_stopping_patience
    select_by_joint_score(shared, patience)
    # The Trainer refuses an --eval_strategy without an eval_dataset; `JointTrainer.evaluate` scores these splits
    # through each task's own Trainer.
    validation = {part.name: part.data.validation for part in parsed.parts if part.data.validation is not None}
    trainer = JointTrainer(
        model=model,
        args=shared,
        train_dataset=stream,
        eval_dataset=validation or None,
        data_collator=lambda batch: batch,  # the stream yields collated batches
        # the joint card is written at the end (`joint_card`); each task's own by its evaluation Trainer
        callbacks=[
            *build_callbacks(replace(parsed.shared.output, model_card=False), None, plan),
            *([EarlyStoppingCallback(patience)] if patience is not None else []),
            NonFiniteLossGuard(),
        ],
        tower_learning_rate=parsed.shared.lora.tower_learning_rate,
        layer_decay=parsed.shared.lora.layer_decay,
        parts=parsed.parts,
        fingerprint=fingerprint,
    )
    log_before_reporters(trainer)
    if not parsed.shared.model.eval_only:
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
    metrics: dict[str, float] = {}
    for part in parsed.parts:
        joint.for_task(part.name)  # its own BatchNorm statistics in place, for its test scores and its saved model
        prediction = score_test(part.task, part.trainer, part.data, part.policy)
        metrics.update({f"test_{part.name}_{key[len('test_') :]}": value for key, value in prediction.metrics.items()})
        save_outputs(part.task, part.trainer, part.data, prediction, part.processor, parsed.shared.lora, part.policy)
    trainer.log_metrics("test", metrics)
    if trainer.is_world_process_zero():

        def extras(folder: Path, final) -> None:
            (folder / "test_results.json").write_text(json.dumps(metrics, indent=4, sort_keys=True) + "\n")
            (folder / "README.md").write_text(joint_card(parsed, metrics, stream.sampler))
            (folder / "task_sampling.json").write_text(json.dumps(sampling_record(stream), indent=4) + "\n")

        save_final(model, parsed.parts[0].processor, output_dir, merged=parsed.shared.lora.save_merged, extras=extras)
        print("mmft: final test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if _main(k, parsed)))
        print(f"mmft: joint model in {output_dir}; each task's model in {output_dir}/<task>")
    return metrics


def _main(key: str, parsed: MultiTaskRun) -> bool:
    """Whether `key` is a task's main or compared metric (the final line prints those)."""
    return any(
        key in {f"test_{p.name}_{m}" for m in (p.task.main_metric, *p.task.compared_metrics)} for p in parsed.parts
    )


def main(argv: list[str], default_config: str | os.PathLike | None = DEFAULT_PRESET) -> int:
    """`recipes/multitask.py`: exit status 0, or 2 with one sentence on stderr for a user's mistake."""
    try:
        parsed = parse_multitask_args(argv, default_config)
    except (ValueError, FileNotFoundError) as error:
        print(f"mmft: {error}", file=sys.stderr)
        return 2
    try:
        run(parsed)
    except (DataError, TowerUnavailable) as error:
        print(f"mmft: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = ["MultiTaskArguments", "MultiTaskRun", "TaskPart", "TaskWeights", "main", "parse_multitask_args", "run"]
