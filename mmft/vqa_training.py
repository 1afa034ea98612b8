"""Train and evaluate a VQA model with the HF `Trainer`: the library side of `recipes/vqa.py`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainingArguments, set_seed

from .arguments import DataArguments, LoraArguments, ModelArguments, OutputArguments
from .callbacks import ModelCardCallback, build_callbacks, log_before_reporters
from .checkpoints import resolve_resume_checkpoint
from .data import BadExamplePolicy, SourceSpec, VQACollator, excluded_eval_positions, prepare_vqa_splits
from .guards import NonFiniteLossGuard, check_output_dir
from .hub import full_parameters, push_output_dir, save_final
from .lora import LoraPlan
from .metrics import load_metric
from .modeling_mmft import MMFTForVisualQuestionAnswering
from .processing_mmft import MMFTProcessor

logger = logging.getLogger("mmft")


def _source_spec(data_args: DataArguments) -> SourceSpec:
    names = SourceSpec.__dataclass_fields__
    return SourceSpec(**{k: v for k, v in vars(data_args).items() if k in names})


def build_model_and_processor(model_args: ModelArguments, answers: list[str] | None, **config_overrides: Any):
    """A fresh model from two towers, or a saved mmft folder (whose answer vocabulary then wins).

    `config_overrides`: further `MMFTConfig` fields for a fresh model (e.g. `initializer_range`).
    """
    if model_args.model_name_or_path:
        # safetensors only: a pickled pytorch_model.bin in a downloaded folder is never unpickled
        model = MMFTForVisualQuestionAnswering.from_pretrained(model_args.model_name_or_path, use_safetensors=True)
        return model, MMFTProcessor.from_pretrained(model_args.model_name_or_path)
    model = MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
        vision=model_args.vision_model,
        text=model_args.text_model,
        vision_model_args=model_args.timm_args(),
        text_model_args=model_args.text_args(),
        bridge=model_args.bridge,
        answers=answers,
        num_bridge_layers=model_args.num_bridge_layers,
        hidden_size=model_args.hidden_size,
        num_attention_heads=model_args.num_attention_heads,
        hidden_dropout=model_args.hidden_dropout,
        **config_overrides,
    )
    processor = MMFTProcessor.from_vision_text_pretrained(
        model_args.vision_model, model_args.text_model, model_args.image_size, model_args.timm_args()
    )
    return model, processor


def tower_provenance(config) -> str:
    """One line saying where each tower's weights came from; from-scratch towers are named as such."""
    scratch = "trained from scratch (random init)"
    vision = f"pretrained ({config.vision_pretrained_from})" if config.vision_pretrained_from else scratch
    text = f"pretrained ({config.text_pretrained_from})" if config.text_pretrained_from else scratch
    return f"vision tower: {vision}; text tower: {text}"


def make_compute_metrics(
    references: list[list[str]], question_types: list[str] | None, id2label: dict[int, str], excluded=None
):
    """`compute_metrics` for the Trainer: official VQA accuracy over answer strings, per question type too.

    `excluded()` gives positions not to score (eval rows whose image failed to decode under --on_bad_example skip).
    """
    metric = load_metric("vqa_accuracy")

    def compute_metrics(eval_prediction) -> dict[str, float]:
        predicted = np.asarray(eval_prediction.predictions).reshape(-1)
        skip = excluded() if excluded else set()
        keep = [i for i in range(len(predicted)) if i not in skip]
        kwargs = {"question_types": [question_types[i] for i in keep]} if question_types else {}
        scores = metric.compute(predictions=[id2label[int(predicted[i])] for i in keep],
                                references=[references[i] for i in keep], **kwargs)  # fmt: skip
        return {**scores, "excluded_bad_rows": float(len(skip))} if skip else scores

    return compute_metrics


def _argmax_logits(logits: Any, labels: Any) -> torch.Tensor:
    # Keep only the predicted ids during evaluation instead of every (N, num_answers) logit.
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(dim=-1)


def write_predictions(path: Path, questions: list[str], references: list[list[str]], answers: list[str]) -> None:
    """One JSON object per eval question: question, predicted answer, reference answers."""
    temporary = path.with_suffix(".jsonl.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for question, reference, answer in zip(questions, references, answers):
            handle.write(json.dumps({"question": question, "prediction": answer, "answers": reference}) + "\n")
    os.replace(temporary, path)  # never leave a half-written predictions file behind


def run_vqa(
    model_args: ModelArguments,
    data_args: DataArguments,
    lora_args: LoraArguments,
    training_args: TrainingArguments,
    callbacks: list | None = None,
    output_args: OutputArguments | None = None,
) -> dict[str, float]:
    """Train (unless `--eval_only`), evaluate on the eval split, save model + processor + metrics."""
    set_seed(training_args.seed)
    check_output_dir(training_args.output_dir)  # a file or a read-only folder fails now, not after training
    policy = BadExamplePolicy(data_args.on_bad_example, data_args.max_bad_fraction,
                              os.path.join(training_args.output_dir, "rejects.jsonl"), data_args.dataset)  # fmt: skip
    if training_args.process_index == 0 and not training_args.resume_from_checkpoint:
        policy.reset()
    # The transform needs the raw image/question/answers columns; the Trainer must not prune them.
    training_args.remove_unused_columns = False
    plan = LoraPlan(
        vision=lora_args.lora_vision,
        text=lora_args.lora_text,
        r=lora_args.lora_r,
        alpha=lora_args.lora_alpha,
        dropout=lora_args.lora_dropout,
        targets=lora_args.lora_targets,
    )
    saved_answers = None
    if model_args.model_name_or_path:
        model, processor = build_model_and_processor(model_args, None)
        saved_answers = [model.config.id2label[i] for i in range(model.config.num_labels)]
    splits = prepare_vqa_splits(
        _source_spec(data_args),
        answers=saved_answers,
        top_k_answers=data_args.top_k_answers,
        max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
        policy=policy,
    )
    if not model_args.model_name_or_path:
        model, processor = build_model_and_processor(model_args, splits.answers)
    splits.attach(processor.image_processor)
    train_data, eval_data = splits.train, splits.eval
    logger.warning("mmft: %s", tower_provenance(model.config))
    model = plan.apply(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if model_args.cache_frozen_text:
        base.mmft.enable_frozen_text_cache()
    # Pipelines score single-answer models with a softmax, soft-score (VQAv2) models with a sigmoid.
    base.config.problem_type = "single_label_classification" if splits.single_answer else "multi_label_classification"
    callbacks = list(callbacks or []) + build_callbacks(output_args or OutputArguments(), data_args.dataset, plan)

    raw_eval = eval_data.with_format(None)
    references = raw_eval["answers"]
    question_types = raw_eval["question_type"] if "question_type" in raw_eval.column_names else None
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=VQACollator(processor.tokenizer, model_args.max_question_length),
        processing_class=processor,
        compute_metrics=make_compute_metrics(references, question_types, base.config.id2label,
                                             lambda: excluded_eval_positions(policy, raw_eval["row"])),  # fmt: skip
        preprocess_logits_for_metrics=_argmax_logits,
        callbacks=[*callbacks, NonFiniteLossGuard()],
    )
    log_before_reporters(trainer)
    if not model_args.eval_only:
        with training_args.main_process_first(desc="choosing the checkpoint to resume from"):
            resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir,
                                               training_args.world_size, trainer.is_world_process_zero())
        train_result = trainer.train(resume_from_checkpoint=resume)
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)

    prediction = trainer.predict(eval_data, metric_key_prefix="test")
    trainer.log_metrics("test", prediction.metrics)
    trainer.save_metrics("test", prediction.metrics)
    with full_parameters(trainer):  # ZeRO-3: gather the partitioned weights (all processes) before saving
        if trainer.is_world_process_zero():
            output_dir = Path(training_args.output_dir)
            answers_out = [base.config.id2label[int(i)] for i in np.asarray(prediction.predictions).reshape(-1)]
            write_predictions(output_dir / "predictions.jsonl", raw_eval["question"], references, answers_out)
            final = save_final(model, processor, output_dir, merged=lora_args.save_merged)
            for callback in trainer.callback_handler.callbacks:  # re-render the card now that test metrics exist
                if isinstance(callback, ModelCardCallback):
                    callback.write(training_args, trainer.state, final)
            print(f"\nmmft: {tower_provenance(base.config)}")
            print("mmft: final test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in prediction.metrics.items()
                                                            if isinstance(v, float)))
            print(f"mmft: model, processor and test_results.json saved to {output_dir}")
            if policy.mode == "skip":
                print(f"mmft: {policy.summary()}")
    if training_args.push_to_hub:
        push_output_dir(trainer)
    return prediction.metrics

