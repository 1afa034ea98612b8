"""`mmft evaluate`: score a saved model on one split of a dataset exactly as its training run scored its test split.

    mmft evaluate --model outputs/easy_vqa --dataset easy_vqa
    mmft evaluate --model outputs/vqav2 --dataset vqav2 --questions_file q.json --annotations_file a.json \\
        --image_dir val2014 --split train --submission results.json

The task is read from the model's config, and every data flag of that task's recipe is accepted (`DataArguments` and
the task's `arguments_class`, parsed by the same `HfArgumentParser`). The evaluation is the training run's own:
`mmft.training.make_trainer`, `Task.evaluate` and `Task.prediction_records`, so `eval_results.json` has the keys of
the run's `test_results.json` (prefix `test_`) and, on the same split, the same values; `predictions.jsonl` is written
as the run writes it. Only the scored split is read and checked (`Task.prepare_eval_data`; the targets come from the
saved config), the model folder is read, never written, and a folder without trained weights is refused.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .arguments import DataArguments, LoraArguments, ModelArguments, OutputArguments, RecipeArguments
from .atomic import atomic_write_text
from .data import BadExamplePolicy, DataError, excluded_eval_positions
from .data.splits import TEST_SPLIT_NAMES, VALIDATION_SPLIT_NAMES

logger = logging.getLogger("mmft")

EVAL_RESULTS, PREDICTIONS, REJECTS = "eval_results.json", "predictions.jsonl", "rejects.jsonl"
# What a folder with trained weights holds: safetensors, sharded safetensors, or a LoRA adapter (merged on load).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


class EvaluationError(ValueError):
    """A user's mistake in an `mmft evaluate` command line: said in one sentence, exit status 2."""


@dataclass
class EvaluateArguments:
    """Flags of `mmft evaluate` besides the data flags of the model's task."""

    split: str | None = field(
        default=None,
        metadata={"help": "the split to score (default: --eval_split, else the first of test/validation/val)"},
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "where eval_results.json and predictions.jsonl go (default: MODEL/eval/DATASET-SPLIT)"},
    )
    submission: str | None = field(
        default=None,
        metadata={"help": "VQA: also write the official VQAv2 results file [{question_id, answer}] here"},
    )
    per_device_eval_batch_size: int = 8
    dataloader_num_workers: int = 0
    bf16: bool = field(default=False, metadata={"help": "evaluate in bfloat16 autocast (as the recipe's --bf16)"})


def data_flags_parser(task, *extra: type, prog: str):
    """The `HfArgumentParser` of `extra` dataclasses, `DataArguments` and `task.arguments_class`: the data flags of
    the task's recipe, with the same names, types and checks."""
    from transformers import HfArgumentParser

    return HfArgumentParser((*extra, DataArguments, task.arguments_class), prog=prog)


def parse_evaluate_args(task, argv: list[str]) -> tuple[EvaluateArguments, DataArguments, Any]:
    """(EvaluateArguments, DataArguments, the task's arguments) of `argv`; a wrong flag exits with status 2."""
    parser = data_flags_parser(task, EvaluateArguments, prog="mmft evaluate --model MODEL")
    try:
        options, data_args, task_args = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ValueError as error:  # a flag's own check (e.g. --rerank_k -1), as the recipe reports it
        raise EvaluationError(str(error)) from None
    if data_args.streaming:
        raise EvaluationError("--streaming does not apply to mmft evaluate: the scored split is read whole")
    if options.split and data_args.eval_split and options.split != data_args.eval_split:
        raise EvaluationError(f"--split {options.split} and --eval_split {data_args.eval_split} differ; pass one")
    data_args.eval_split = options.split or data_args.eval_split
    return options, data_args, task_args


# The split a training run scores at the end when none is named: its test split, else (a run that never evaluated
# during training) its validation split.
EVAL_SPLIT_NAMES = (*TEST_SPLIT_NAMES, *VALIDATION_SPLIT_NAMES)


def evaluation_split(spec, available) -> str:
    """The split `mmft evaluate` scores: the one named (`--split` / `--eval_split`), else the one a training run
    scores at the end (test, else the first of validation/val/valid/dev). No training split is needed."""
    name = spec.eval_split or next((s for s in EVAL_SPLIT_NAMES if s in available), None)
    if name not in available:
        named = f"no split {name!r}" if name else f"none of the splits {list(EVAL_SPLIT_NAMES)}"
        raise DataError(
            f"dataset {spec.dataset!r} has {named}; available splits: {sorted(available)}; name one with --split"
        )
    return name


def check_model_folder(path: str) -> None:
    """Refuse, in one sentence, what is not a saved model with trained weights (before anything is loaded)."""
    folder = Path(path)
    if not folder.is_dir():
        raise EvaluationError(f"--model {path}: no such folder (mmft evaluate reads a saved model folder)")
    if not (folder / "config.json").is_file():
        raise EvaluationError(f"--model {path}: no config.json; is this the output_dir of an mmft run?")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise EvaluationError(
            f"--model {path} holds no trained weights ({', '.join(WEIGHT_FILES)}); pass the output_dir of a "
            "finished training run, or one of its checkpoint-N folders"
        )


def default_output_dir(model: str, dataset: str, split: str) -> Path:
    """`MODEL/eval/<dataset>-<split>`: beside the model it describes, never over the run's own files."""
    name = re.sub(r"[^0-9A-Za-z._-]+", "_", Path(dataset.rstrip("/")).name or dataset).strip("_") or "dataset"
    return Path(model) / "eval" / f"{name}-{split}"


def submission_entries(question_ids: list[int], records: list[dict], excluded: set[int]) -> list[dict]:
    """VQAv2's results file: `{"question_id", "answer"}` for every question of the split, in its order. A question
    that was not scored (a bad row left out or skipped under `--on_bad_example skip`) gets the empty answer, which
    the official evaluation counts as wrong: the file still answers every question it expects."""
    answers = {int(r["question_id"]): r["prediction"] for i, r in enumerate(records) if i not in excluded}
    return [{"question_id": int(q), "answer": answers.get(int(q), "")} for q in question_ids]


def _timing_free(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float) and "runtime" not in k)


def evaluate_model(model_path: str, argv: list[str]) -> dict[str, float]:
    """Score the saved model `model_path` on the split `argv` names; write `eval_results.json`, `predictions.jsonl`
    (and `--submission`); return the metrics. User mistakes raise `EvaluationError` / `DataError`."""
    from transformers import AutoConfig, TrainingArguments

    from .loading import load_model
    from .tasks import task_for_model
    from .training import make_plan, make_trainer, score_test, use_cpu_cores, write_predictions

    check_model_folder(model_path)
    task_class = task_for_model(AutoConfig.from_pretrained(model_path))
    options, data_args, task_args = parse_evaluate_args(task_class, argv)
    task = task_class(task_args)
    if options.submission and task.name != "vqa":
        raise EvaluationError(f"--submission writes VQAv2's results file; {model_path} holds a {task.name!r} model")
    spec = replace(data_args, dataset=data_args.dataset or task.default_dataset)
    splits = task.read_splits(spec)
    split = evaluation_split(spec, splits)
    if options.submission and "question_id" not in splits[split].column_names:
        raise EvaluationError(
            "--submission needs each question's question_id: --dataset vqav2 (or a dataset with a question_id column)"
        )
    output_dir = Path(options.output_dir) if options.output_dir else default_output_dir(model_path, spec.dataset, split)
    policy = BadExamplePolicy(
        data_args.on_bad_example, data_args.max_bad_fraction, str(output_dir / REJECTS), spec.dataset
    )
    model, processor, _ = load_model(model_path)  # every task serves `predict`; the task was checked above
    data = task.prepare_eval_data(
        spec, splits, split, model.config, policy, data_args.max_eval_samples, data_args.max_train_samples
    )
    task.attach(data, processor, policy)
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_eval_batch_size=options.per_device_eval_batch_size,
        dataloader_num_workers=options.dataloader_num_workers,
        bf16=options.bf16,
        use_cpu=not torch.accelerator.is_available(),  # as the recipes default it (`cpu_unless_accelerator`)
        report_to="none",
        disable_tqdm=True,
    )
    use_cpu_cores(training_args)
    recipe = RecipeArguments(
        ModelArguments(max_text_length=getattr(processor, "max_length", None) or ModelArguments.max_text_length),
        data_args,
        task_args,
        LoraArguments(),
        training_args,
        OutputArguments(throughput=False, plots=False, model_card=False),
    )
    trainer = make_trainer(task, recipe, data, model, processor, make_plan(recipe.lora), policy)
    prediction = score_test(task, trainer, data, policy)  # the training run's test scoring (`mmft.training.run`)
    # The Trainer times its setup of a model it has not trained; a training run never reports that key.
    prediction.metrics.pop("test_model_preparation_time", None)
    id2label = model.config.id2label
    records = task.prediction_records(data, prediction.predictions, id2label)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(output_dir / PREDICTIONS, records)
    atomic_write_text(output_dir / EVAL_RESULTS, json.dumps(prediction.metrics, indent=4, sort_keys=True) + "\n")
    task.after_evaluation(output_dir, data, prediction, id2label)
    print(f"mmft evaluate: {model_path} on {spec.dataset}, split {split!r}: {_timing_free(prediction.metrics)}")
    print(f"mmft evaluate: {EVAL_RESULTS} and {PREDICTIONS} written to {output_dir}", file=sys.stderr)
    if options.submission:
        excluded = excluded_eval_positions(policy, data.eval.with_format(None)["row"])
        question_ids = splits[split].select_columns(["question_id"])["question_id"]
        limit = data_args.max_eval_samples
        entries = submission_entries(question_ids[:limit] if limit else question_ids, records, excluded)
        atomic_write_text(options.submission, json.dumps(entries) + "\n")
        blank = sum(1 for entry in entries if entry["answer"] == "")
        note = f"; {blank} question(s) not scored (bad rows) have the empty answer" if blank else ""
        print(f"mmft evaluate: {len(entries)} answers written to {options.submission}{note}", file=sys.stderr)
    return prediction.metrics


def main(model_path: str, argv: list[str]) -> int:
    """`mmft evaluate`: exit status 0, or 2 with one sentence on stderr for a user's mistake."""
    try:
        evaluate_model(model_path, argv)
    except (EvaluationError, DataError, FileNotFoundError) as error:
        print(f"mmft evaluate: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "EVAL_RESULTS",
    "EvaluateArguments",
    "EvaluationError",
    "check_model_folder",
    "data_flags_parser",
    "default_output_dir",
    "evaluate_model",
    "evaluation_split",
    "main",
    "parse_evaluate_args",
    "submission_entries",
]
