"""Hub publishing: the model card text (README.md with Hub metadata), adapter save/load, and the final push.

Metadata goes through `huggingface_hub.ModelCardData` / `EvalResult`, which write the YAML front matter and the
`model-index` block the Hub reads; the card body is plain Markdown built here. What a card says about the task
(pipeline tag, metrics, how to use) comes from the model's task (`mmft.tasks`, `Task.card`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .file_modes import give_ordinary_modes
from .lora import LoraPlan, tower_names
from .unwrap import task_model

LIMITATIONS = (
    "- Labels (answers) are classified over a fixed vocabulary seen in training (`config.id2label`); anything else "
    "cannot be predicted.\n"
    "- A tower trained from scratch has only seen this dataset: expect it to fail on images unlike the training "
    "data.\n"
    "- Scores are the model's confidence, not calibrated probabilities.\n"
    "- Accuracy is measured on the test split named below; it says nothing about other data."
)


# -- card ---------------------------------------------------------------------------------------------------------
def describe_tower(config, kind: str) -> tuple[str, str]:
    """(architecture summary, where the weights came from) of the vision or text tower."""
    sub = getattr(config, f"{kind}_config")
    if getattr(sub, "model_type", None) == "timm_wrapper":
        args = json.dumps(sub.model_args) if getattr(sub, "model_args", None) else ""
        what = f"timm `{sub.architecture}` {args}".strip()
    else:
        layers = getattr(sub, "num_hidden_layers", "?")
        what = f"`{sub.model_type}`, {layers} layers, width {getattr(sub, 'hidden_size', '?')}"
    source = getattr(config, f"{kind}_pretrained_from")
    return what, f"pretrained: `{source}`" if source else "trained from scratch (random init)"


def uses_lora(model, lora_plan: LoraPlan | None) -> bool:
    """Whether `lora_plan` puts adapters on any tower `model` has."""
    return lora_plan is not None and any(getattr(lora_plan, t) == "lora" for t in task_model(model).towers())


def _plan_rows(model, lora_plan: LoraPlan | None) -> list[str]:
    towers = list(task_model(model).towers())  # the plan's slots this model has (a decoder only for captioning)
    if lora_plan is not None:
        rows = [f"| {t} tower | {getattr(lora_plan, t)} |" for t in towers]
        if uses_lora(model, lora_plan):
            rows.append(f"| LoRA | r={lora_plan.r}, alpha={lora_plan.alpha}, dropout={lora_plan.dropout}, "
                        f"targets={lora_plan.targets} |")  # fmt: skip
        if getattr(lora_plan, "quantize", None):
            rows.append(f"| QLoRA | lora/frozen towers held in {lora_plan.quantize} while training (bitsandbytes); "
                        "a merged save is dequantized to fp32 |")  # fmt: skip
    else:
        counts = LoraPlan.trainable_parameters(model)
        rows = [f"| {t} tower | {'trained' if counts[t] else 'frozen'} ({counts[t]:,} trainable parameters) |"
                for t in towers]  # fmt: skip
    return ["| part | fine-tuning |", "|---|---|", *rows, "| bridge + head | full (always trained) |"]


def _hyperparameters(args) -> list[str]:
    names = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
             "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "optim", "seed",
             "bf16", "fp16")  # fmt: skip
    rows = [f"| {n} | {getattr(args, n)} |" for n in names if hasattr(args, n)]
    rows.append(f"| world size | {getattr(args, 'world_size', 1)} |")
    return ["| hyperparameter | value |", "|---|---|", *rows]


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
) -> ModelCard:
    """A Hub model card for an mmft model trained with `args` (TrainingArguments); the task comes from the model."""
    from .tasks import task_for_model

    card = task_for_model(model).card
    config = task_model(model).core.config
    repo = getattr(args, "hub_model_id", None) or str(args.output_dir)
    model_name = model_name or repo.rstrip("/").split("/")[-1]
    dataset = dataset or "unknown"
    metrics = metrics or {}
    # Baselines scored in the same run (`<metric>_baseline_<name>`) are in the results table, not the model's index.
    headline = {k: v for k, v in metrics.items() if isinstance(v, (int, float))
                and k.removeprefix(f"{split}_").startswith(card.metrics) and "_baseline_" not in k}  # fmt: skip
    eval_results = [
        EvalResult(task_type=card.task_type, task_name=card.task_name, dataset_type=dataset, dataset_name=dataset,
                   dataset_split=split, metric_type=key.removeprefix(f"{split}_"), metric_name=key,
                   metric_value=float(value))
        for key, value in headline.items()
    ]  # fmt: skip
    tags = ["mmft", "transformers", *([card.pipeline_tag] if card.pipeline_tag else []), card.task_type, config.bridge]
    if uses_lora(model, lora_plan):
        tags += ["lora", "peft"]
    data = ModelCardData(
        library_name="mmft", pipeline_tag=card.pipeline_tag, tags=list(dict.fromkeys(tags)), datasets=[dataset],
        model_name=model_name, eval_results=eval_results or None,
    )  # fmt: skip
    vision, vision_source = describe_tower(config, "vision")
    text, text_source = describe_tower(config, "text")
    labelled = bool(config.id2label) and getattr(task_model(model), "has_labels", True)
    decoder_rows = []
    if getattr(config, "decoder_config", None) is not None:
        decoder, decoder_source = describe_tower(config, "decoder")
        decoder_rows = [f"| caption decoder | {decoder} | {decoder_source} |"]
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
        f"| vision tower | {vision} | {vision_source} |",
        f"| text tower | {text} | {text_source} |",
        f"| bridge | `{config.bridge}`{layers}, width {config.hidden_size}, {config.num_attention_heads} heads | "
        "trained from scratch |",
        *decoder_rows,
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
        "## Results",
        "",
        *(["| metric | value |", "|---|---|", *[f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                                                for k, v in metrics.items()]]
          if metrics else ["No evaluation results yet."]),  # fmt: skip
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


def write_model_card(output_dir: str | Path, model, args, dataset: str | None = None, lora_plan: LoraPlan | None = None,
                     log_history: list[dict] | None = None, model_name: str | None = None) -> Path:  # fmt: skip
    """Render the card with the best metrics available and save it as `output_dir/README.md`."""
    metrics, split = final_metrics(output_dir, log_history)
    card = render_model_card(model, args, dataset, lora_plan, metrics, split, model_name)
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path


# -- saving and loading -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def full_parameters(trainer) -> Iterator[None]:
    """Inside: every parameter of the trained model is whole on every process, so it can be merged and saved.

    Only DeepSpeed ZeRO-3 needs this: it partitions even frozen weights, and `save_pretrained` on the partitioned
    model would write empty tensors for every weight above its persistence threshold. Enter it on all processes
    (the gather is collective); changes made inside are dropped on exit, which is fine for a final save.
    """
    engine = getattr(trainer, "deepspeed", None)
    if engine is None or engine.zero_optimization_stage() != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(trainer.model.parameters()), modifier_rank=None):
        yield


STAGING_PREFIX = ".final-"  # the temporary folder inside output_dir a final save is written to first
# A final save's weight files: one save's must never sit beside another's (an adapter_config.json beside a merged
# model makes transformers load the folder as an adapter).
WEIGHT_FILE_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
                        "pytorch_model*.bin", "pytorch_model.bin.index.json", "adapter_model.safetensors",
                        "adapter_model.bin", "adapter_config.json")  # fmt: skip


def _loading_problems(folder: Path, final, adapter: bool) -> list[str]:
    """Why the model saved in `folder` does not load back whole (empty: it does)."""
    from safetensors import safe_open
    from transformers.integrations import is_deepspeed_zero3_enabled

    if adapter:
        from peft import get_peft_model_state_dict

        with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
            saved = set(handle.keys())
        expected = set(get_peft_model_state_dict(final).keys())
        return [f"adapter keys missing: {sorted(expected - saved)[:5]}"] if expected - saved else []
    if is_deepspeed_zero3_enabled():
        # from_pretrained would partition the copy across processes that are not loading it: read the headers only
        for path in folder.glob("*.safetensors"):
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        return []
    _, info = type(final).from_pretrained(folder, output_loading_info=True, use_safetensors=True)
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
    return [f"{kind}: {sorted(map(str, info[kind]))[:5]}" for kind in kinds if info.get(kind)]


def _is_weights(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in WEIGHT_FILE_PATTERNS)


def _publish(staging: Path, output_dir: Path) -> None:
    """Move every file of `staging` into `output_dir` (os.replace: each file whole), weights last; then delete the
    previous save's weight files that the new one does not have (e.g. an adapter beside a merged model)."""
    new = sorted(p.name for p in staging.iterdir())
    for name in sorted(new, key=_is_weights):
        target = output_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    for stale in output_dir.iterdir():
        if stale.is_file() and _is_weights(stale.name) and stale.name not in new:
            stale.unlink()


def save_final(model, processor, output_dir: str | Path, merged: bool,
               extras: Callable[[Path, Any], None] | None = None) -> Any:  # fmt: skip
    """Save the final model all or nothing; returns what was saved (the merged model, or the peft model).

    The merged model (or the peft adapter plus the base config), the processor and whatever `extras(folder, final)`
    writes (predictions, results, card) go to a temporary folder inside `output_dir` first; the model is loaded back
    from there, and only then is each file moved into place. A full disk, a kill or a model that does not load back
    leaves the previous final model in `output_dir` as it was.
    """
    from .lora import LoraPlan as Plan

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for leftover in output_dir.glob(f"{STAGING_PREFIX}*"):  # a save killed before its move
        shutil.rmtree(leftover, ignore_errors=True)
    adapter = hasattr(model, "peft_config") and not merged
    final = model if adapter else Plan.merge(model)  # merging a plain model only dequantizes (QLoRA)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir))
    try:
        final.save_pretrained(staging)
        if adapter:  # what `load_adapter_model` rebuilds the base from, and which head class
            inner = task_model(model)
            inner.config.architectures = [type(inner).__name__]
            inner.config.save_pretrained(staging)
        processor.save_pretrained(staging)
        if extras is not None:
            extras(staging, final)
        problems = _loading_problems(staging, final, adapter)
        if problems:
            raise ValueError(f"the final model saved to {staging} does not load back ({'; '.join(problems)}); "
                             f"the previous contents of {output_dir} are kept")  # fmt: skip
        give_ordinary_modes(staging)  # safetensors writes weights as 0600 (mmft.file_modes)
        _publish(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def load_adapter_model(path: str, merge: bool = False):
    """
    Load a folder (or Hub repo) saved as a LoRA adapter: rebuild the base model from the saved mmft config, with
    each LoRA/frozen tower's weights from where it was pretrained, then load the adapter with peft.
    Returns the `PeftModel`, or with `merge=True` a plain mmft model with the adapters folded in.
    """
    from peft import PeftConfig, PeftModel

    from .configuration_mmft import MMFTConfig
    from .safe_loading import require_safetensors_adapter
    from .tasks import task_for_model

    require_safetensors_adapter(path)  # before peft could fall back to a pickled adapter_model.bin
    peft_config = PeftConfig.from_pretrained(path)
    config = MMFTConfig.from_pretrained(path)
    model = task_for_model(config).model_class(config)
    saved = set(peft_config.modules_to_save or [])
    for kind, qualified in tower_names(model).items():
        parent, _, attribute = qualified.rpartition(".")
        if any(name.split(".")[-1] == attribute for name in saved):  # fully trained: its weights are in the adapter
            continue
        source = getattr(config, f"{kind}_pretrained_from")
        if not source:
            raise ValueError(
                f"{path}: the {kind} tower was trained from scratch with LoRA or frozen, so its base weights are not "
                "in the adapter; save such runs merged (--save_merged true)"
            )
        setattr(model.get_submodule(parent), attribute, _pretrained_tower(kind, source, config))
    peft_model = PeftModel.from_pretrained(model, path)
    return peft_model.merge_and_unload() if merge else peft_model


def _pretrained_tower(kind: str, source: str, config):
    """The tower of `kind` with the pretrained weights it was built from (a decoder is a causal LM)."""
    from .towers import load_pretrained_decoder, load_pretrained_tower

    if kind == "decoder":
        return load_pretrained_decoder(source, config.decoder_config)
    return load_pretrained_tower(source, getattr(config, f"{kind}_config"), kind)


def push_output_dir(trainer, commit_message: str = "End of training",
                    before_upload: Callable[[str, str], None] | None = None) -> Any:  # fmt: skip
    """
    Upload `output_dir` (final model, processor, card) to `args.hub_model_id` the way `Trainer.push_to_hub` does,
    without its re-save of the unmerged model and its card, which would overwrite the final ones.
    `before_upload(output_dir, repo_id)` adds files first (the demo's Space files: `mmft.demo.space.write_space`).
    """
    args = trainer.args
    if not trainer.is_world_process_zero():
        return None
    if trainer.hub_model_id is None:
        trainer.init_hf_repo()
    if before_upload is not None:
        before_upload(args.output_dir, trainer.hub_model_id)
    if getattr(trainer, "push_in_progress", None) is not None:  # a checkpoint push still uploading
        trainer.push_in_progress.wait_until_done()
    from transformers.utils.hub import hf_api

    return hf_api().upload_folder(
        repo_id=trainer.hub_model_id, folder_path=str(args.output_dir), commit_message=commit_message,
        token=args.hub_token, revision=args.hub_revision,
        ignore_patterns=["_*", "checkpoint-*", "incomplete-checkpoint-*", f"{STAGING_PREFIX}*"],
    )  # fmt: skip


__all__ = [
    "describe_tower",
    "final_metrics",
    "load_adapter_model",
    "push_output_dir",
    "render_model_card",
    "save_final",
    "write_model_card",
]
