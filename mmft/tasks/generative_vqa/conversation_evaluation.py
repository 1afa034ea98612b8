"""Conversation evaluation: every assistant turn generated from the gold history before it, and scored.

Each assistant turn of an eval conversation is one item: the decoder reads the conversation up to that turn as
written in the data (teacher-forced context: earlier answers are the references, not the model's) and generates the
turn; the text tower reads the first user turn, as in training. Scores, over all turns:

- `exact_match`: the normalised answer (the official VQA answer normalisation) equals the normalised reference;
- `accuracy`: the VQA accuracy against the one reference (with one reference it is exact match), and
  `accuracy_<type>` per question type where turns carry one (a turn's `type`, or the row's `question_types`);
- `bleu_1`..`bleu_4`, `cider`, `rouge_l`: the captioning metrics, for free-text answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..captioning.evaluation import caption_scores
from .chat import chat_messages, first_question, role_of
from .conversations import turn_types
from .evaluation import Inputs, answer_scores

UNTYPED = "untyped"  # the type of a turn without one, where other turns have one


@dataclass
class EvalTurns:
    """The assistant turns of an eval split, one entry per turn, in row then turn order."""

    rows: list[int] = field(default_factory=list)  # position of the turn's row in the split
    turns: list[int] = field(default_factory=list)  # index of the turn in its conversation
    questions: list[str] = field(default_factory=list)  # the first user turn: the text tower's input
    asked: list[str] = field(default_factory=list)  # the user turn this turn answers
    contexts: list[list[dict[str, str]]] = field(default_factory=list)  # chat messages before the turn
    references: list[str] = field(default_factory=list)
    types: list[str | None] = field(default_factory=list)


def eval_turns(conversations: Sequence[Sequence[dict[str, Any]]], row_types: Sequence | None = None) -> EvalTurns:
    """The assistant turns of `conversations` (canonical turns), with the row types (`question_types`) if any."""
    items = EvalTurns()
    for row, turns in enumerate(conversations):
        messages = chat_messages(turns)
        kinds = iter(turn_types(turns, row_types[row] if row_types else None))
        for index, turn in enumerate(turns):
            if role_of(turn) != "assistant":
                continue
            items.rows.append(row)
            items.turns.append(index)
            items.questions.append(first_question(turns))
            items.asked.append(messages[index - 1]["content"])
            items.contexts.append(messages[:index])
            items.references.append(messages[index]["content"])
            items.types.append(next(kinds))
    return items


def turn_inputs(processor, items: EvalTurns, offset: int = 0) -> Inputs:
    """`generate_answers`'s inputs for items [offset, ...) one per row: the first user turn (text tower) and the
    history before the turn, then the assistant's opening (decoder: `MMFTChatProcessor.context_features`)."""

    def inputs(start: int, stop: int) -> dict[str, torch.Tensor]:
        batch = slice(offset + start, offset + stop)
        return {
            **processor.question_features(items.questions[batch]),
            **processor.context_features(items.contexts[batch]),
        }

    return inputs


def turn_scores(predictions: Sequence[str], references: Sequence[str], types: Sequence[str | None]) -> dict:
    """Exact match, VQA accuracy (per type where turns have types), BLEU-1..4, CIDEr-D and ROUGE-L of the turns."""
    typed = {"question_types": [t or UNTYPED for t in types]} if any(types) else {}
    groups = [[reference] for reference in references]
    return {**answer_scores(predictions, groups, **typed), **caption_scores(predictions, groups)}


__all__ = ["EvalTurns", "UNTYPED", "eval_turns", "turn_inputs", "turn_scores"]
