"""A tiny LLaVA-style conversation dataset on disk: `<split>.jsonl` tables of `{"image", "conversations"}` rows whose
images are coloured squares in `images/` (paths relative to the table), two question/answer turns per row."""

from __future__ import annotations

import json
from pathlib import Path

from helpers_data import write_image

COLOURS = ("red", "blue")


def conversation(colour: str, key_style: str = "from") -> list[dict]:
    """Two turns about the square: its colour (type `color`), then whether it is red (type `yes/no`)."""
    turns = [
        ("human", "<image>\nwhat color is the square?", "color"),
        ("gpt", colour, "color"),
        ("human", "is it red?", "yes/no"),
        ("gpt", "yes" if colour == "red" else "no", "yes/no"),
    ]
    if key_style == "from":
        return [{"from": role, "value": text, "type": kind} for role, text, kind in turns]
    roles = {"human": "user", "gpt": "assistant"}
    return [{"role": roles[role], "content": text, "type": kind} for role, text, kind in turns]


def write_conversations(
    root: Path, n_train: int = 8, n_test: int = 4, key_style: str = "from", bad: dict[int, dict] | None = None
) -> Path:
    """`train.jsonl` and `test.jsonl` under `root`; `bad` replaces training rows (row index -> record)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("test", n_test)):
        lines = []
        for index in range(count):
            colour = COLOURS[index % 2]
            name = f"images/{split}{index}.png"
            write_image(root / name, colour)
            record = {"image": name, "conversations": conversation(colour, key_style)}
            if split == "train" and bad and index in bad:
                record = {"image": name, **bad[index]}
            lines.append(json.dumps(record))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


__all__ = ["conversation", "write_conversations"]
