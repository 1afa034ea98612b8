"""A conversation as the decoder reads it: roles, the `<image>` placeholder, the chat template and the loss mask.

A conversation is a list of turns `{"role", "content"}` (roles `system`, `user`, `assistant`; LLaVA's `human` and
`gpt` are read as `user` and `assistant`). The decoder reads the whole conversation rendered by its tokenizer's chat
template (`tokenizer.apply_chat_template`); a tokenizer without one gets `DEFAULT_CHAT_TEMPLATE` (ChatML), with a
warning, and keeps it (it is saved with the processor). The labels are -100 everywhere except on each assistant
turn's tokens and the end token that closes it (the token `generate()` stops at).

How the assistant's tokens are found, for any template: the conversation up to assistant turn k, rendered with the
generation prompt, is a prefix of the conversation through turn k, which is a prefix of the whole rendering; the
characters between the two are turn k's reply (its text, the end token, and whatever the template puts after it).
The tokens overlapping those characters, up to and including the first end token, are trained on. A template that
does not render a conversation as the concatenation of its turns is refused, since nothing can then tell the
assistant's tokens apart.

Light on purpose (transformers only): the processor (`chat_processing.py`) is part of the model side.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from ...labels import IGNORE_INDEX

logger = logging.getLogger("mmft.data")

IMAGE_PLACEHOLDER = "<image>"  # LLaVA's image token: removed, the image reaches the decoder as the prefix
# raw role -> the chat template's role; LLaVA data says human/gpt, chat data user/assistant
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
USER, ASSISTANT, SYSTEM = "user", "assistant", "system"

# ChatML (what SmolLM2 and many instruct models use), with each turn closed by the tokenizer's own end token
# (`end_token`, the id generation stops at), so for a ChatML tokenizer it is ChatML exactly.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + end_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def role_of(turn: dict[str, Any]) -> str | None:
    """A turn's role as the chat template names it (None: unknown)."""
    role = turn.get("role")
    return ROLES.get(role.strip().lower()) if isinstance(role, str) else None


def strip_placeholder(text: str) -> str:
    """`text` without LLaVA's `<image>` token and the whitespace around it."""
    return re.sub(r"\s*" + re.escape(IMAGE_PLACEHOLDER) + r"\s*", " ", text).strip()


def chat_messages(turns: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Canonical turns (`{"role", "content", ...}`, raw role names) -> the chat template's messages."""
    return [{"role": role_of(turn), "content": strip_placeholder(turn["content"])} for turn in turns]


def first_question(turns: Sequence[dict[str, Any]]) -> str:
    """The first user turn's text: what the text tower reads (and the bridge fuses with the image)."""
    return next(message["content"] for message in chat_messages(turns) if message["role"] == USER)


def assistant_turns(turns: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of the assistant turns: one generated answer each in evaluation."""
    return [index for index, turn in enumerate(turns) if role_of(turn) == ASSISTANT]


def chat_template_of(tokenizer, template: str | None = None) -> str:
    """The chat template the decoder reads conversations with: `template` when given (a Jinja string), else the
    tokenizer's own, else `DEFAULT_CHAT_TEMPLATE`, said in the log (the choice is saved with the processor)."""
    if template:
        return template
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    logger.warning(
        "mmft: the decoder tokenizer (%s) has no chat template; conversations are rendered with mmft's default "
        "ChatML template (mmft.tasks.generative_vqa.chat.DEFAULT_CHAT_TEMPLATE, each turn closed by %r), saved with "
        "the model; pass --chat_template to choose another",
        type(tokenizer).__name__,
        tokenizer.convert_ids_to_tokens(end_token_id(tokenizer)),
    )
    return DEFAULT_CHAT_TEMPLATE


def end_token_id(tokenizer) -> int:
    """The token that ends an answer (EOS, else SEP): what closes an assistant turn and stops generation."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def render(tokenizer, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
    """The chat template's text of `messages` (with the assistant's opening when `generation_prompt`)."""
    return tokenizer.apply_chat_template(
        list(messages),
        tokenize=False,
        add_generation_prompt=generation_prompt,
        end_token=tokenizer.convert_ids_to_tokens(end_token_id(tokenizer)),
    )


def _assistant_spans(tokenizer, messages: Sequence[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """(start, stop) characters of each assistant turn's reply in `text`, the rendering of all `messages`."""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != ASSISTANT:
            continue
        before = render(tokenizer, messages[:index], True)
        through = render(tokenizer, messages[: index + 1], False)
        if not (through.startswith(before) and text.startswith(through)):
            raise ValueError(
                "the decoder's chat template does not render a conversation as the concatenation of its turns (the "
                f"rendering up to turn {index} is not a prefix of the whole), so the assistant's tokens cannot be told "
                "apart for the loss; pass another template with --chat_template"
            )
        spans.append((len(before), len(through)))
    return spans


def conversation_tokens(
    tokenizer, messages: Sequence[dict[str, str]], start_id: int | None = None
) -> tuple[list[int], list[int]]:
    """(token ids, labels) of a whole conversation as the chat template renders it; labels are -100 but on the
    assistant turns' tokens and the end token closing each. A template that writes the BOS token itself
    (`{{ bos_token }}`) has it dropped when it is `start_id`: the processor puts the start token at position 0. (A
    template whose first token only equals it, as ChatML's `<|im_start|>` for SmolLM2, keeps it.)"""
    text = render(tokenizer, messages, False)
    spans = _assistant_spans(tokenizer, messages, text)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    if _writes_start(tokenizer, ids, start_id):
        ids, offsets = ids[1:], offsets[1:]
    labels, end = [IGNORE_INDEX] * len(ids), end_token_id(tokenizer)
    for start, stop in spans:
        # every token carrying some of the reply's characters, up to and including the first end token
        for position, (first, last) in enumerate(offsets):
            if last > start and first < stop:
                labels[position] = ids[position]
                if ids[position] == end:
                    break
    return ids, labels


def context_tokens(tokenizer, messages: Sequence[dict[str, str]], start_id: int | None = None) -> list[int]:
    """The token ids the decoder reads before writing the next assistant turn: `messages` rendered with the
    generation prompt (a BOS the template writes dropped, as in `conversation_tokens`)."""
    ids = tokenizer(render(tokenizer, messages, True), add_special_tokens=False)["input_ids"]
    return ids[1:] if _writes_start(tokenizer, ids, start_id) else list(ids)


def _writes_start(tokenizer, ids: list[int], start_id: int | None) -> bool:
    """Whether the rendering starts with the start token because the template writes the BOS token itself."""
    return bool(ids) and start_id is not None and ids[0] == start_id and "bos_token" in (tokenizer.chat_template or "")


__all__ = [
    "ASSISTANT",
    "DEFAULT_CHAT_TEMPLATE",
    "IMAGE_PLACEHOLDER",
    "ROLES",
    "SYSTEM",
    "USER",
    "assistant_turns",
    "chat_messages",
    "chat_template_of",
    "context_tokens",
    "conversation_tokens",
    "end_token_id",
    "first_question",
    "render",
    "strip_placeholder",
]
