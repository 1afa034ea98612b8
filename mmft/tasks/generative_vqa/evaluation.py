"""Generative VQA evaluation: generate an answer per eval question and score it against every reference answer.

Scores: the official VQA accuracy (`mmft.metrics.vqa_normalization`: answers normalised as the official evaluation
does, `min(1, matches / 3)` over the leave-one-out subsets of many references, exact match for one), per question
type and per answer type where the data has them (`accuracy_<type>`), and `exact_match`: the normalised answer equals
the normalised target (the row's most frequent answer, what training teaches).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...inference.embeddings import pixel_batches
from ...inference.sharded import map_and_gather
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

    def speed(self) -> dict[str, float]:
        """`generation_seconds` and `generated_tokens_per_second`, as the evaluations report them."""
        return {
            "generation_seconds": self.seconds,
            "generated_tokens_per_second": self.new_tokens / max(self.seconds, 1e-9),
        }


Inputs = Callable[[int, int], dict[str, torch.Tensor]]  # rows [start, stop) -> their text and decoder inputs


def question_inputs(processor, questions: Sequence[str]) -> Inputs:
    """`generate_answers`'s inputs for one question per row: the text tower's question and the decoder's prompt."""

    def inputs(start: int, stop: int) -> dict[str, torch.Tensor]:
        batch = list(questions[start:stop])
        return {**processor.question_features(batch), **processor.generation_features(batch)}

    return inputs


@torch.no_grad()
def generate_answers(
    model,
    processor,
    dataset,
    inputs: Inputs,
    batch_size: int,
    generate_kwargs: dict[str, Any],
    device: torch.device,
) -> GeneratedAnswers:
    """Answers about `dataset`'s images (a transform gives pixel_values, rows in order), in batches; `inputs(start,
    stop)` gives the text tower's and the decoder's inputs of rows [start, stop) (`question_inputs`, or a
    conversation's turns: `conversation_evaluation.turn_inputs`)."""
    model.eval()
    eos = processor.caption_token_ids()["eos"]
    answers: list[str] = []
    seconds, new_tokens = 0.0, 0
    for pixel_values in pixel_batches(dataset, batch_size):
        batch = inputs(len(answers), len(answers) + len(pixel_values))
        batch = {key: value.to(device) for key, value in batch.items()}
        start = time.perf_counter()
        sequences = model.generate(pixel_values=pixel_values.to(device), **batch, **generate_kwargs)
        seconds += time.perf_counter() - start
        prompt = batch["input_ids"].shape[1]
        for row in sequences[:, prompt:].tolist():
            new_tokens += row.index(eos) + 1 if eos in row else len(row)
        answers += processor.decode_answers(sequences, prompt)
    return GeneratedAnswers(answers, seconds, new_tokens)


def sharded_generation(
    count: int, generate: Callable[[int, int], GeneratedAnswers], accelerator=None
) -> GeneratedAnswers:
    """`generate(start, stop)` over this process's shard of rows [0, count) (`map_and_gather`), gathered in row
    order: every row's answer, the slowest process's generation time and the tokens all processes generated.
    Every process must call it (it is a collective)."""
    shards: list[GeneratedAnswers] = []

    def answers(start: int, stop: int) -> list[str]:
        shards.append(generate(start, stop))
        return shards[-1].answers

    gathered = map_and_gather(count, answers, accelerator)
    processes = accelerator.num_processes if accelerator is not None else 1
    timing = map_and_gather(  # one row per process: its generation time and tokens
        processes, lambda start, stop: [(shards[0].seconds, shards[0].new_tokens)] * (stop - start), accelerator
    )
    return GeneratedAnswers(gathered, max(s for s, _ in timing), sum(n for _, n in timing))


__all__ = [
    "GeneratedAnswers",
    "Inputs",
    "answer_scores",
    "generate_answers",
    "most_frequent_answer",
    "question_inputs",
    "sharded_generation",
]
