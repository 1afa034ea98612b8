"""Fusion study: train every variant of `ablation_models.VARIANTS` on easy-VQA at one fixed budget, several seeds.

    python benchmarks/ablation.py                                  # full study (what `make ablation` runs)
    python benchmarks/ablation.py --variants co_attention concat --seeds 0 --max_steps 100
    python benchmarks/ablation.py ... --learning_rate 1e-3         # any recipe flag overrides the preset

All variants share the recipe preset (towers, widths, LoRA plan, optimizer, schedule, batch), the data pipeline,
the loss (cross-entropy on the answer id) and the metric (`vqa_accuracy`, overall and per question type). One JSON
record per (variant, seed) is appended to `--results` as soon as it finishes, so an interrupted study resumes
where it stopped; `ablation_report.py` turns the file into the docs table and plot.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import HfArgumentParser, Trainer, set_seed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from ablation_models import VARIANTS, build_variant, count_parameters, scale_tower_learning_rate  # noqa: E402

from mmft import MMFTProcessor, get_task, parse_recipe_args  # noqa: E402
from mmft.atomic import atomic_write_text  # noqa: E402

DEFAULT_PRESET = REPO / "recipes" / "configs" / "easy_vqa.yaml"


@dataclass
class AblationArguments:
    """What to compare and at which budget; every other flag goes to the recipe preset."""

    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={"help": ", ".join(VARIANTS)})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_steps: int = field(default=300, metadata={"help": "optimizer steps per run (the budget)"})
    eval_samples: int | None = field(
        default=3000, metadata={"help": "a fixed random subset of the eval split (seed 0); 0: all of it"}
    )
    results: str = field(default="outputs/ablation/results.json", metadata={"help": "JSON file, outside git"})
    preset: str = str(DEFAULT_PRESET)
    vilt_layers: int = field(default=6, metadata={"help": "ViLT depth (its width is the bridge width)"})
    vilt_patch_size: int = 8
    threads: int = field(default=2, metadata={"help": "torch threads (this machine has 2 cores)"})
    tag: str = field(default="", metadata={"help": "suffix for the variant names of this invocation, e.g. 'L1'"})
    tower_lr_scale: float = field(
        default=1.0, metadata={"help": "towers' learning rate relative to the bridge/head's (investigation knob)"}
    )
    mmft_config: str | None = field(
        default=None, metadata={"help": 'JSON of extra MMFTConfig fields, e.g. {"initializer_range": 0.01}'}
    )
    fresh: bool = field(default=False, metadata={"help": "discard earlier records in --results instead of resuming"})


def label(variant: str, args: AblationArguments) -> str:
    """The name a run is recorded under: the variant, plus `[tag]` for investigation runs."""
    return f"{variant}[{args.tag}]" if args.tag else variant


def cross_entropy_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """One loss for every variant (the Trainer's `compute_loss_func`): cross-entropy on the answer id."""
    return F.cross_entropy(outputs["logits"], labels)


def _recipe_args(args: AblationArguments, overrides: list[str], seed: int, output_dir: str):
    forced = [
        "--seed",
        str(seed),
        "--max_steps",
        str(args.max_steps),
        "--output_dir",
        output_dir,
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
    ]
    recipe = parse_recipe_args(overrides + forced, "vqa", default_config=args.preset)
    recipe.training.remove_unused_columns = False  # the transform needs the raw columns, as in the recipe
    return recipe


def load_data(args: AblationArguments, overrides: list[str]):
    """The VQA task, its data (with the image transform attached) and the processor."""
    recipe = _recipe_args(args, overrides, 0, tempfile.gettempdir())
    task = get_task("vqa")(recipe.task)
    splits = task.prepare_data(
        recipe.data, max_train_samples=recipe.data.max_train_samples, max_eval_samples=recipe.data.max_eval_samples
    )
    if args.eval_samples and args.eval_samples < len(splits.eval):
        splits.eval = splits.eval.shuffle(seed=0).select(range(args.eval_samples))
    model_args = recipe.model
    processor = MMFTProcessor.from_vision_text_pretrained(
        model_args.vision_model, model_args.text_model, model_args.image_size, model_args.timm_args()
    )
    task.attach(splits, processor)
    return task, splits, processor


def run_one(variant: str, seed: int, args: AblationArguments, overrides: list[str], data) -> dict:
    """Build, train for `max_steps` and evaluate one variant; returns its JSON record."""
    task, splits, processor = data
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmft_ablation_") as output_dir:
        recipe = _recipe_args(args, overrides, seed, output_dir)
        model_args, lora_args, training_args = recipe.model, recipe.lora, recipe.training
        set_seed(seed)
        options = {
            "vilt_layers": args.vilt_layers,
            "vilt_patch_size": args.vilt_patch_size,
            "vocab_size": len(processor.tokenizer),  # ViLT embeds the text tower's tokenizer's ids
            "mmft_config": json.loads(args.mmft_config) if args.mmft_config else {},
        }
        model = build_variant(variant, model_args, lora_args, splits, options)
        trainable = [p for p in model.parameters() if p.requires_grad]
        watched = trainable[:2] + trainable[-2:]  # first tower tensors and the head's last layer
        before = [p.detach().clone() for p in watched]
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=splits.train,
            data_collator=task.collator(processor, model_args.max_text_length),
            compute_metrics=task.compute_metrics(splits, dict(enumerate(splits.labels))),
            preprocess_logits_for_metrics=task.preprocess_logits_for_metrics,
            compute_loss_func=cross_entropy_loss,
        )
        if args.tower_lr_scale != 1.0:
            scale_tower_learning_rate(trainer.create_optimizer(), model, args.tower_lr_scale)
        built, cpu_built = time.perf_counter(), time.process_time()
        train_metrics = trainer.train().metrics
        trained, cpu_trained = time.perf_counter(), time.process_time()
        test_metrics = trainer.predict(splits.eval, metric_key_prefix="test").metrics
        finished = time.perf_counter()
    record = {
        "variant": label(variant, args),
        "seed": seed,
        "max_steps": args.max_steps,
        "global_step": trainer.state.global_step,
        "batch_size": training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps,
        "learning_rate": training_args.learning_rate,
        "parameters": count_parameters(model),
        "train_loss": train_metrics.get("train_loss"),
        "build_s": built - started,
        "train_s": trained - built,
        "eval_s": finished - trained,
        "wall_s": finished - started,
        "step_s": (trained - built) / max(trainer.state.global_step, 1),
        # CPU seconds (all threads) are far less sensitive than wall time to other jobs on a shared machine.
        "train_cpu_s": cpu_trained - cpu_built,
        "step_cpu_s": (cpu_trained - cpu_built) / max(trainer.state.global_step, 1),
        "eval_questions": len(splits.eval),
        # Evidence that the run trained: tower and head tensors moved (the smoke test checks this).
        "trainable_moved": [not torch.equal(b, p.detach()) for b, p in zip(before, watched)],
        **{key.removeprefix("test_"): value for key, value in test_metrics.items() if key.startswith("test_accuracy")},
    }
    del trainer, model
    gc.collect()
    return record


def _save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=1))  # a reader never sees a half-written file


def run_ablation(args: AblationArguments, overrides: list[str]) -> dict:
    """Run every (variant, seed) not yet in `args.results`; returns the whole results payload."""
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    path = Path(args.results)
    payload = json.loads(path.read_text()) if path.is_file() and not args.fresh else {"runs": []}
    done = {(r["variant"], r["seed"], r["max_steps"]) for r in payload["runs"]}
    payload["meta"] = {
        "arguments": asdict(args),
        "recipe_overrides": overrides,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "torch": torch.__version__,
    }
    study_started = time.perf_counter()
    data = load_data(args, overrides)
    for seed in args.seeds:  # seed-major, so a study cut short still has every variant at the first seeds
        for variant in args.variants:
            if (label(variant, args), seed, args.max_steps) in done:
                continue
            record = run_one(variant, seed, args, overrides, data)
            payload["runs"].append(record)
            _save(path, payload)
            print(
                f"ablation: {variant:<16} seed {seed}  acc {record['accuracy']:.4f}  "
                f"shape {record.get('accuracy_shape', float('nan')):.4f}  step {record['step_s']:.3f}s  "
                f"wall {record['wall_s']:.0f}s",
                flush=True,
            )
    payload["meta"]["study_wall_s_this_invocation"] = time.perf_counter() - study_started
    _save(path, payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = HfArgumentParser(AblationArguments)
    args, overrides = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    torch.set_num_threads(args.threads)
    payload = run_ablation(args, overrides)
    print(
        f"ablation: {len(payload['runs'])} runs in {args.results} "
        f"({payload['meta']['study_wall_s_this_invocation']:.0f} s this invocation)"
    )


if __name__ == "__main__":
    main()
