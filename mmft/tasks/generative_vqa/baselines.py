"""Two answer baselines for conversation data with question types, which a generative VQA model must beat.

- **frequent**: for every question, the most frequent training answer of its question type (normalised as VQA
  answers are; `most_frequent_answer`);
- **nearest**: the answer of the nearest training image that was asked the same question (same type and the same
  text once tokenized); when no training image was, the nearest one asked a question of the same type. Images are
  compared by pixels, as no model is involved: each image is shrunk to 16x16, its background (the per-channel
  median) subtracted, and the cosine similarity taken with captioning's `nearest_neighbours`.

Both are scored per turn, with one reference (the turn's answer), by the generative VQA metrics (exact match and VQA
accuracy, which agree with one reference) and the caption metrics (BLEU-1..4, CIDEr-D, ROUGE-L), overall and per
question type. `benchmarks/scenes_conversation_baselines.py` prints them for the scenes conversations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ...data.scenes_conversations import IMAGE_TOKEN
from ...image_utils import load_rgb
from ...metrics.caption_tokenize import tokenize_caption
from ..captioning.evaluation import caption_scores, nearest_neighbours
from .evaluation import answer_scores, most_frequent_answer

PIXEL_SIDE = 16  # images are compared at 16x16: the shapes' colours and grid cells survive, the pixel noise does not


@dataclass
class Turns:
    """The question-answer turns of a split, flattened: turn k asks `questions[k]` about row `images[k]`."""

    images: list[int] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)


def question_key(question: str) -> str:
    """A question as the nearest-image baseline matches it: without the image placeholder, tokenized (lowercase, no
    punctuation)."""
    return tokenize_caption(question.replace(IMAGE_TOKEN, " "))


def conversation_turns(conversations: Sequence[Sequence[dict]], question_types: Sequence[Sequence[str]]) -> Turns:
    """Every (human question, gpt answer) pair of LLaVA-style conversations, with the row's type for each question."""
    turns = Turns()
    for row, (messages, types) in enumerate(zip(conversations, question_types)):
        questions = [m["value"] for m in messages if m["from"] == "human"]
        answers = [m["value"] for m in messages if m["from"] == "gpt"]
        if not len(questions) == len(answers) == len(types):
            raise ValueError(
                f"row {row}: {len(questions)} questions, {len(answers)} answers and {len(types)} question types; "
                "each human turn needs one answer and one type"
            )
        turns.images += [row] * len(questions)
        turns.questions += [question.replace(IMAGE_TOKEN, "").strip() for question in questions]
        turns.answers += answers
        turns.types += list(types)
    return turns


def pixel_features(images: Sequence, side: int = PIXEL_SIDE) -> torch.Tensor:
    """(N, 3 * side * side): each image (anything `load_rgb` opens) shrunk to side x side, minus its background."""
    rows = []
    for image in images:
        pixels = np.asarray(load_rgb(image).resize((side, side), Image.BOX), dtype=np.float32)  # (side, side, 3)
        rows.append((pixels - np.median(pixels, axis=(0, 1))).reshape(-1))  # the tint differs per image: drop it
    return torch.from_numpy(np.stack(rows))


def frequent_answers(train: Turns, test: Turns) -> list[str]:
    """Per test turn, the most frequent training answer of its question type (of all training answers if the type
    never occurs in training)."""
    by_type = defaultdict(list)
    for kind, answer in zip(train.types, train.answers):
        by_type[kind].append(answer)
    overall = most_frequent_answer(train.answers)
    best = {kind: most_frequent_answer(answers) for kind, answers in by_type.items()}
    return [best.get(kind, overall) for kind in test.types]


def nearest_answers(train: Turns, test: Turns, train_features: torch.Tensor, test_features: torch.Tensor) -> list[str]:
    """Per test turn, the answer of the most pixel-similar training image asked the same question, else asked one
    of the same type (else any training turn)."""
    by_question, by_type = defaultdict(list), defaultdict(list)
    for k, (kind, question) in enumerate(zip(train.types, train.questions)):
        by_question[kind, question_key(question)].append(k)
        by_type[kind].append(k)
    groups = defaultdict(list)  # candidate training turns -> the test turns that choose among them
    for k, (kind, question) in enumerate(zip(test.types, test.questions)):
        candidates = by_question.get((kind, question_key(question))) or by_type.get(kind) or range(len(train.types))
        groups[tuple(candidates)].append(k)
    found: list[str] = [""] * len(test.types)
    for candidates, chosen in groups.items():
        keys = train_features[[train.images[k] for k in candidates]]  # (C, D)
        queries = test_features[[test.images[k] for k in chosen]]  # (Q, D)
        for k, nearest in zip(chosen, nearest_neighbours(queries, keys).tolist()):
            found[k] = train.answers[candidates[nearest]]
    return found


def turn_scores(predictions: Sequence[str], answers: Sequence[str], types: Sequence[str]) -> dict[str, dict]:
    """{"all": scores, <type>: scores, ...}; scores: turns, exact_match, vqa_accuracy, bleu_1..4, cider, rouge_l."""
    subsets = {"all": list(range(len(answers)))}
    for k, kind in enumerate(types):
        subsets.setdefault(kind, []).append(k)
    table = {}
    for name, rows in subsets.items():
        guessed, references = [predictions[k] for k in rows], [[answers[k]] for k in rows]
        vqa = answer_scores(guessed, references)
        table[name] = {
            "turns": len(rows),
            "exact_match": vqa["exact_match"],
            "vqa_accuracy": vqa["accuracy"],
            **caption_scores(guessed, references),
        }
    return table


def baseline_scores(train, test) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Both baselines' `turn_scores` on `test` (datasets, or dicts of columns, with `image`, `conversations` and
    `question_types`; images undecoded or decoded), and their answers, one per test turn."""
    train_turns = conversation_turns(train["conversations"], train["question_types"])
    test_turns = conversation_turns(test["conversations"], test["question_types"])
    train_features, test_features = pixel_features(train["image"]), pixel_features(test["image"])
    answers = {
        "frequent": frequent_answers(train_turns, test_turns),
        "nearest": nearest_answers(train_turns, test_turns, train_features, test_features),
    }
    scores = {name: turn_scores(guessed, test_turns.answers, test_turns.types) for name, guessed in answers.items()}
    return scores, answers


__all__ = [
    "Turns",
    "baseline_scores",
    "conversation_turns",
    "frequent_answers",
    "nearest_answers",
    "pixel_features",
    "question_key",
    "turn_scores",
]
