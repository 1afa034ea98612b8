"""Conversation rows (LLaVA-style data) for generative VQA: the `conversations` column, its checks, and whether a
dataset has one.

A row is `{"image": ..., "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value":
"..."}, ...]}`; turns may also be `{"role": ..., "content": ...}` (roles `user`, `assistant`, `system`), the column may
be called `messages`, and a turn may carry a `type` (per-type accuracy). Each turn is stored as `{"role", "content",
"type"}` with its raw role name; values that are not text are stored as missing and named by the checks.

The checks run before training with every other row check (`mmft.data.validation`), so a bad conversation gets the
bad-example policy (`--on_bad_example raise|skip`, the rejects ledger) and a message naming the dataset, split, row,
image file and the turn: `conversations[2]: unknown role 'bot'; ...`. A conversation is: an optional system turn,
then user and assistant turns alternating, starting with a user turn and ending with an assistant turn, every turn
with text. LLaVA's `<image>` token may appear once, in the first user turn; it is removed (the image reaches the
decoder through the prefix), and a conversation without it is fine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Value

from ...data.columns import Column
from ...data.sources import SourceSpec, local_splits, read_records
from .chat import ASSISTANT, IMAGE_PLACEHOLDER, ROLES, SYSTEM, USER, role_of, strip_placeholder

CONVERSATIONS = "conversations"
CONVERSATION_KEYS = ("conversations", "messages")  # accepted record keys, first preferred
TURN_FIELDS = ("role", "content", "type")
QUESTION_TYPES = "question_types"  # optional column: one type per assistant turn (a turn's own `type` wins)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def canonical_turn(turn: Any) -> dict[str, str | None]:
    """A raw turn (`from`/`value` or `role`/`content`, optional `type`) -> `{"role", "content", "type"}`; a value
    that is not text is stored as None for the checks to name."""
    if not isinstance(turn, dict):
        return dict.fromkeys(TURN_FIELDS)
    role = turn.get("from", turn.get("role"))
    content = turn.get("value", turn.get("content"))
    kind = turn.get("type")
    return {"role": _text_or_none(role), "content": _text_or_none(content), "type": None if kind is None else str(kind)}


def _canonical_conversation(value: Any) -> list[dict[str, str | None]]:
    return [canonical_turn(turn) for turn in value] if isinstance(value, list) else []


def _turn_problem(index: int, turn: dict[str, str | None]) -> str | None:
    where = f"{CONVERSATIONS}[{index}]"
    if turn["role"] is None:
        return f"{where}: no role ('from' or 'role' is missing or not text)"
    if role_of(turn) is None:
        return f"{where}: unknown role {turn['role']!r}; known: {', '.join(ROLES)}"
    if turn["content"] is None:
        return f"{where} ({turn['role']}): no text ('value' or 'content' is missing or not text)"
    if not strip_placeholder(turn["content"]):
        return f"{where} ({turn['role']}): empty value"
    return None


def _order_problem(turns: list[dict[str, str | None]]) -> str | None:
    roles = [role_of(turn) for turn in turns]
    start = 1 if roles[0] == SYSTEM else 0
    if ASSISTANT not in roles:
        return f"{CONVERSATIONS} has no assistant ('gpt') turn to train on"
    for index in range(start, len(roles)):
        expected = USER if (index - start) % 2 == 0 else ASSISTANT
        if roles[index] != expected:
            return (
                f"{CONVERSATIONS}[{index}]: a {roles[index]!r} turn where a {expected!r} turn belongs; turns must "
                "alternate user, assistant, user, ... (after an optional first system turn)"
            )
    if roles[-1] != ASSISTANT:
        return f"{CONVERSATIONS}[{len(roles) - 1}]: the conversation ends with a user turn no assistant turn answers"
    return None


def _placeholder_problem(turns: list[dict[str, str | None]]) -> str | None:
    counts = [turn["content"].count(IMAGE_PLACEHOLDER) for turn in turns]
    first_user = next(i for i, turn in enumerate(turns) if role_of(turn) == USER)
    misplaced = next((i for i, count in enumerate(counts) if count and i != first_user), None)
    if sum(counts) > 1 or misplaced is not None:
        where = f"[{misplaced}]" if misplaced is not None else f"[{first_user}]"
        return (
            f"{CONVERSATIONS}{where}: {sum(counts)} {IMAGE_PLACEHOLDER!r} placeholders; a conversation has one image, "
            f"so at most one {IMAGE_PLACEHOLDER!r}, in the first user turn (it is removed: the image reaches the "
            "decoder through the prefix)"
        )
    return None


def conversation_problem(turns: Any) -> str | None:
    """Why a canonical conversation cannot be trained on (None when it can), naming the turn."""
    if not turns:
        return f"{CONVERSATIONS!r} is empty or not a list of turns"
    for index, turn in enumerate(turns):
        if problem := _turn_problem(index, turn):
            return problem
    return _order_problem(turns) or _placeholder_problem(turns)


@dataclass(frozen=True)
class ConversationColumn(Column):
    """The `conversations` column: a list of turns `{"role", "content", "type"}` (`canonical_turn`), checked by
    `conversation_problem`. A CSV cell may hold the list as JSON."""

    def __post_init__(self) -> None:  # its own kind: no text/texts/labels rules apply
        pass

    def feature(self):
        return [{field: Value("string") for field in TURN_FIELDS}]

    def canonical(self, value: Any) -> Any:
        return _canonical_conversation(self.split_text(value) if isinstance(value, str) else value)

    def problem(self, value: Any) -> str | None:
        return conversation_problem(value)


CONVERSATION = ConversationColumn(
    CONVERSATIONS, "conversation", keys=CONVERSATION_KEYS, noun="conversation", json_list=True
)


def turn_types(turns: Sequence[dict[str, Any]], row_types: Sequence[str] | None = None) -> list[str | None]:
    """One question type per assistant turn: the turn's own `type`, else the user turn's before it, else the row's
    `question_types` entry for it (None: untyped)."""
    types = []
    for number, index in enumerate(i for i, turn in enumerate(turns) if role_of(turn) == ASSISTANT):
        kind = turns[index].get("type") or (turns[index - 1].get("type") if index else None)
        if kind is None and row_types is not None and number < len(row_types):
            kind = row_types[number]
        types.append(kind)
    return types


def _first_record(table: Path) -> dict:
    return next((record for _, record in read_records(table)), {})


def conversations_key(spec: SourceSpec, flag: str | None, named: Sequence[str] = ()) -> str | None:
    """The column holding conversations (None: the data is question/answer rows): `--conversations_column` when
    given, a named conversation dataset's, else a local table whose first row has `conversations` or `messages`."""
    if flag:
        return flag
    if spec.dataset in named:
        return CONVERSATIONS
    if not (spec.dataset and os.path.isdir(spec.dataset)):
        return None  # a Hub dataset says so with --conversations_column
    splits = local_splits(Path(spec.dataset)) or {}
    table = splits.get(spec.train_split, next(iter(splits.values()), (None, None)))[0]
    record = _first_record(table) if table is not None else {}
    return next((key for key in CONVERSATION_KEYS if key in record), None)


__all__ = [
    "CONVERSATION",
    "CONVERSATIONS",
    "CONVERSATION_KEYS",
    "QUESTION_TYPES",
    "ConversationColumn",
    "canonical_turn",
    "conversation_problem",
    "conversations_key",
    "turn_types",
]
