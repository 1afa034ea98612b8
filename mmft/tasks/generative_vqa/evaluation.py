"""Generative VQA evaluation: generate an answer per eval question and score it against every reference answer.

Scores: the official VQA accuracy (`mmft.metrics.vqa_normalization`: answers normalised as the official evaluation
does, `min(1, matches / 3)` over the leave-one-out subsets of many references, exact match for one), per question
type and per answer type where the data has them (`accuracy_<type>`), and `exact_match`: the normalised answer equals
the normalised target (the row's most frequent answer, what training teaches).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...inference.embeddings import pixel_batches
from ...metrics import load_metric
from ...metrics.vqa_normalization import normalize_answer


def most_frequent_answer(answers: Sequence[str]) -> str:
    """The answer given most often once normalised (ties: the first given), as first written."""
    counts: Counter = Counter()
    written: dict[str, str] = {}
    for answer in answers:
        key = normalize_answer(answer)
        counts[key] += 1
        written.setdefault(key, answer)
    return written[counts.most_common(1)[0][0]]


def answer_scores(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    question_types: Sequence[str] | None = None,
    answer_types: Sequence[str] | None = None,
) -> dict[str, float]:
    """VQA accuracy (with per-type breakdowns where types are given) and exact match against the target answer."""
    kwargs = {name: list(v) for name, v in (("question_types", question_types), ("answer_types", answer_types)) if v}
    scores = load_metric("vqa_accuracy").compute(
        predictions=list(predictions), references=[list(r) for r in references], **kwargs
    )
    exact = [
        normalize_answer(prediction) == normalize_answer(most_frequent_answer(answers))
        for prediction, answers in zip(predictions, references)
    ]
    return {**{key: float(value) for key, value in scores.items()}, "exact_match": sum(exact) / len(exact)}


@dataclass
class GeneratedAnswers:
    answers: list[str]
    seconds: float  # generate() time only
    new_tokens: int  # tokens generated (up to and including each answer's end token)


@torch.no_grad()
def generate_answers(
    model,
    processor,
    dataset,
    questions: Sequence[str],
    batch_size: int,
    generate_kwargs: dict[str, Any],
    device: torch.device,
) -> GeneratedAnswers:
    """Answers to `questions` about `dataset`'s images (a transform gives pixel_values, rows in order), in batches."""
    model.eval()
    eos = processor.caption_token_ids()["eos"]
    answers: list[str] = []
    seconds, new_tokens = 0.0, 0
    for pixel_values in pixel_batches(dataset, batch_size):
        batch = list(questions[len(answers) : len(answers) + len(pixel_values)])
        inputs = {**processor.question_features(batch), **processor.generation_features(batch)}
        inputs = {key: value.to(device) for key, value in inputs.items()}
        start = time.perf_counter()
        sequences = model.generate(pixel_values=pixel_values.to(device), **inputs, **generate_kwargs)
        seconds += time.perf_counter() - start
        prompt = inputs["input_ids"].shape[1]
        for row in sequences[:, prompt:].tolist():
            new_tokens += row.index(eos) + 1 if eos in row else len(row)
        answers += processor.decode_answers(sequences, prompt)
    return GeneratedAnswers(answers, seconds, new_tokens)


__all__ = ["GeneratedAnswers", "answer_scores", "generate_answers", "most_frequent_answer"]
