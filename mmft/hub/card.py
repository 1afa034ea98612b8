"""The model card: README.md with the Hub metadata, written beside the final model.

Metadata goes through `huggingface_hub.ModelCardData` / `EvalResult`, which write the YAML front matter and the
`model-index` block the Hub reads; the card body is plain Markdown built here. What a card says about the task
(pipeline tag, metrics, how to use) comes from the model's task (`mmft.tasks`, `Task.card`).
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..lora import LoraPlan
from ..towers import TOWER_SPECS, present_specs
from ..unwrap import task_model

LIMITATIONS = (
    "- Labels (answers) are classified over a fixed vocabulary seen in training (`config.id2label`); anything else "
    "cannot be predicted.\n"
    "- A tower trained from scratch has only seen this dataset: expect it to fail on images unlike the training "
    "data.\n"
    "- Scores are the model's confidence, not calibrated probabilities.\n"
    "- Accuracy is measured on the test split named below; it says nothing about other data."
)


def describe_tower(config, kind: str) -> tuple[str, str]:
    """(architecture summary, where the weights came from) of the tower of `kind` (its spec's `describe`)."""
    return TOWER_SPECS[kind].describe(config)


def uses_lora(model, lora_plan: LoraPlan | None) -> bool:
    """Whether `lora_plan` puts adapters on any tower `model` has."""
    return lora_plan is not None and any(getattr(lora_plan, t) == "lora" for t in task_model(model).towers())


def _plan_rows(model, lora_plan: LoraPlan | None) -> list[str]:
    towers = list(task_model(model).towers())  # the plan's slots this model has (a decoder only for captioning)
    if lora_plan is not None:
        rows = [f"| {t} tower | {getattr(lora_plan, t)} |" for t in towers]
        if uses_lora(model, lora_plan):
            rows.append(
                f"| LoRA | r={lora_plan.r}, alpha={lora_plan.alpha}, dropout={lora_plan.dropout}, "
                f"targets={lora_plan.targets} |"
            )
        if getattr(lora_plan, "quantize", None):
            rows.append(
                f"| QLoRA | lora/frozen towers held in {lora_plan.quantize} while training (bitsandbytes); "
                "a merged save is dequantized to fp32 |"
            )
    else:
        counts = LoraPlan.trainable_parameters(model)
        rows = [
            f"| {t} tower | {'trained' if counts[t] else 'frozen'} ({counts[t]:,} trainable parameters) |"
            for t in towers
        ]
    return ["| part | fine-tuning |", "|---|---|", *rows, "| bridge + head | full (always trained) |"]


def _hyperparameters(args) -> list[str]:
    names = (
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "lr_scheduler_type",
        "warmup_steps",
        "weight_decay",
        "optim",
        "seed",
        "bf16",
        "fp16",
    )
    rows = [f"| {n} | {getattr(args, n)} |" for n in names if hasattr(args, n)]
    rows.append(f"| world size | {getattr(args, 'world_size', 1)} |")
    return ["| hyperparameter | value |", "|---|---|", *rows]


def _training_rows(learning_rates: list[tuple[str, int, float]] | None, augmentation: str | None) -> list[str]:
    """The learning rate of each optimizer parameter group (when mmft grouped them) and the augmentation line."""
    rows: list[str] = []
    if learning_rates:
        rows += [
            "Learning rates (peak, before the schedule) per parameter group:",
            "",
            "| parameter group | parameters | learning rate |",
            "|---|---|---|",
            *[f"| {name} | {count:,} | {lr:.3g} |" for name, count, lr in learning_rates],
            "",
        ]
    if augmentation is not None:
        rows += [f"Training-time augmentation: {augmentation}.", ""]
    return rows


def final_metrics(output_dir: str | Path, log_history: list[dict] | None) -> tuple[dict[str, float], str]:
    """(metrics, split): test_results.json when present, else the last evaluation in the log history."""
    path = Path(output_dir) / "test_results.json"
    if path.is_file():
        return json.loads(path.read_text()), "test"
    for row in reversed(log_history or []):
        if any(k.startswith("eval_") for k in row):
            return {k: v for k, v in row.items() if k.startswith("eval_")}, "eval"
    return {}, "test"


def render_model_card(
    model,
    args,
    dataset: str | None = None,
    lora_plan: LoraPlan | None = None,
    metrics: dict[str, float] | None = None,
    split: str = "test",
    model_name: str | None = None,
    learning_rates: list[tuple[str, int, float]] | None = None,
    augmentation: str | None = None,
) -> ModelCard:
    """A Hub model card for an mmft model trained with `args` (TrainingArguments); the task comes from the model.

    `learning_rates`: (parameter group, parameters, peak learning rate) rows (`mmft.param_groups.describe_groups`);
    `augmentation`: what training did to its images ("none", or `TrainAugmentation.describe()`); None: not said.
    """
    from ..tasks import task_for_model

    card = task_for_model(model).card
    config = task_model(model).core.config
    repo = getattr(args, "hub_model_id", None) or str(args.output_dir)
    model_name = model_name or repo.rstrip("/").split("/")[-1]
    dataset = dataset or "unknown"
    metrics = metrics or {}
    # Baselines scored in the same run (`<metric>_baseline_<name>`) are in the results table, not the model's index.
    headline = {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float))
        and k.removeprefix(f"{split}_").startswith(card.metrics)
        and "_baseline_" not in k
    }
    eval_results = [
        EvalResult(
            task_type=card.task_type,
            task_name=card.task_name,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=key.removeprefix(f"{split}_"),
            metric_name=key,
            metric_value=float(value),
        )
        for key, value in headline.items()
    ]
    tags = ["mmft", "transformers", *([card.pipeline_tag] if card.pipeline_tag else []), card.task_type, config.bridge]
    if uses_lora(model, lora_plan):
        tags += ["lora", "peft"]
    data = ModelCardData(
        library_name="mmft",
        pipeline_tag=card.pipeline_tag,
        tags=list(dict.fromkeys(tags)),
        datasets=[dataset],
        model_name=model_name,
        eval_results=eval_results or None,
    )
    labelled = bool(config.id2label) and getattr(task_model(model), "has_labels", True)
    towers = present_specs(config)  # a row per tower the model has, in the order data flows through them
    layers = f", {config.num_bridge_layers} layers" if config.bridge in ("co_attention", "cross_attention") else ""
    body = [
        f"# {model_name}",
        "",
        f"{card.summary} built with [mmft](https://pypi.org/project/mmft/): a vision tower and a text tower joined "
        f"by a `{config.bridge}` bridge" + (f", over {config.num_labels} labels." if labelled else "."),
        "",
        "## Model",
        "",
        "| part | architecture | weights |",
        "|---|---|---|",
        *(spec.card_row(config) for spec in towers if not spec.reads_bridge),
        f"| bridge | `{config.bridge}`{layers}, width {config.hidden_size}, {config.num_attention_heads} heads | "
        "trained from scratch |",
        *(spec.card_row(config) for spec in towers if spec.reads_bridge),
        f"| head | `{type(task_model(model)).__name__}` | trained from scratch |",
        "",
        "## Fine-tuning plan",
        "",
        *_plan_rows(model, lora_plan),
        "",
        "## Training",
        "",
        f"Dataset: `{dataset}`.",
        "",
        *_hyperparameters(args),
        "",
        *_training_rows(learning_rates, augmentation),
        "## Results",
        "",
        *(
            [
                "| metric | value |",
                "|---|---|",
                *[f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()],
            ]
            if metrics
            else ["No evaluation results yet."]
        ),
        "",
        "## How to use",
        "",
        "```python",
        "import mmft  # registers the mmft classes with transformers' Auto classes and pipelines",
        card.usage.format(repo=repo),
        "```",
        "",
        "or from the command line:",
        "",
        "```bash",
        *task_for_model(model).command_lines(repo),
        "```",
        "",
        "A folder saved as a LoRA adapter (`save_merged: false`) loads with `mmft.hub.load_adapter_model(path)`.",
        "",
        "## Limitations",
        "",
        card.limitations or LIMITATIONS,
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def write_model_card(
    output_dir: str | Path,
    model,
    args,
    dataset: str | None = None,
    lora_plan: LoraPlan | None = None,
    log_history: list[dict] | None = None,
    model_name: str | None = None,
    learning_rates: list[tuple[str, int, float]] | None = None,
    augmentation: str | None = None,
) -> Path:
    """Render the card with the best metrics available and save it as `output_dir/README.md`."""
    metrics, split = final_metrics(output_dir, log_history)
    card = render_model_card(model, args, dataset, lora_plan, metrics, split, model_name, learning_rates, augmentation)
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path


__all__ = [
    "LIMITATIONS",
    "describe_tower",
    "final_metrics",
    "render_model_card",
    "uses_lora",
    "write_model_card",
]
