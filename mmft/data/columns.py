"""Column kinds of a task's rows: how a raw value becomes the canonical one, and why a value is unusable.

A task declares its columns (besides `image`) as `Column`s; every reader, the pre-training checks and the error
messages are driven by them, so a new task never touches the data code. Three kinds cover the tasks:

- `text`: one string (a question, a statement, a query);
- `texts`: one or more strings (VQA answers, the captions of an image);
- `labels`: one or more class names (a label, or a multi-label list); ints and bools become their string form.

A CSV cell holds one string, so a column of several values may say how a string holds a list (`json_list`,
`separator`); only columns that declare it are split (a caption or a question may contain `|`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasets import Sequence, Value

from ..input_checks import text_problem

TEXT, TEXTS, LABELS = "text", "texts", "labels"
KINDS = (TEXT, TEXTS, LABELS)


@dataclass(frozen=True)
class Column:
    """
    One canonical column of a task's rows.

    Args:
        name: the canonical name every row ends with (`question`, `answers`, `text`, `labels`, `captions`).
        kind: `text`, `texts` or `labels` (see the module docstring).
        keys: the record keys accepted in `metadata.jsonl` / CSV files, first preferred (default: `(name,)`);
            e.g. `("answers", "answer")` reads either a list or a single answer.
        flag: the argument that names the source column of a Hub dataset (default: `<name>_column`).
        noun: what one value is called in messages (default: the name); e.g. "question", "caption".
        normalize: a task-specific conversion applied before the kind's own (e.g. VQAv2's answer dicts).
        json_list: a string value holding a JSON list (`["red", "red", "blue"]`) is that list (kinds `texts` and
            `labels`: how a CSV cell holds several values).
        separator: a string value is split on it (`red|red|blue`), each item stripped; applied after `json_list`.
    """

    name: str
    kind: str
    keys: tuple[str, ...] = ()
    flag: str | None = None
    noun: str | None = None
    normalize: Callable[[Any], Any] | None = None
    json_list: bool = False
    separator: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Column {self.name!r}: unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind == TEXT and (self.json_list or self.separator):
            raise ValueError(f"Column {self.name!r}: a {TEXT!r} column holds one string; it has no list to split")

    @property
    def record_keys(self) -> tuple[str, ...]:
        return self.keys or (self.name,)

    @property
    def flag_name(self) -> str:
        return self.flag or f"{self.name}_column"

    @property
    def what(self) -> str:
        return self.noun or self.name

    def feature(self):
        """The `datasets` feature of the canonical value."""
        return Value("string") if self.kind == TEXT else Sequence(Value("string"))

    def canonical(self, value: Any) -> Any:
        """The canonical form of a raw value; unusable values are kept as they are, for `problem` to name."""
        if isinstance(value, str):
            value = self.split_text(value)
        if self.normalize is not None:
            value = self.normalize(value)
        if self.kind == TEXT:
            return value
        if value is None:
            return []
        if isinstance(value, (str, int, bool)) or (self.kind == LABELS and isinstance(value, float)):
            value = [value]
        if self.kind == LABELS:
            return [_label_string(item) for item in value]
        return list(value)

    def split_text(self, text: str) -> Any:
        """A string value as the list it holds, where the column declares how (`json_list`, `separator`)."""
        if self.json_list and text.lstrip().startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None  # not JSON: one value (or split on the separator) as written
            if isinstance(parsed, list):
                return parsed
        if self.separator and self.separator in text:
            return [item.strip() for item in text.split(self.separator)]
        return text

    def problem(self, value: Any) -> str | None:
        """Why a canonical value is unusable (None when it is fine), in words that name the column."""
        if self.kind == TEXT:
            return text_problem(value, self.what)
        if not value:
            return f"{self.name!r} is empty; every row needs >= 1 {self.what}"
        for index, item in enumerate(value):
            if item is None:
                return f"{self.name!r} item {index} is missing or not text (null)"
            if not isinstance(item, str):
                return f"{self.name!r} item {index} is a {type(item).__name__}, not text"
            if not item.strip():
                return f"{self.name!r} item {index} is an empty {self.what}"
        return None


def _label_string(item: Any) -> Any:
    """Labels are class names: 1 and "1" are the same class; a float label is used only when it is integral."""
    if isinstance(item, bool):
        return str(int(item))
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float) and item.is_integer():
        return str(int(item))
    return item  # a string, or something `problem` will name


__all__ = ["Column", "KINDS", "LABELS", "TEXT", "TEXTS"]
