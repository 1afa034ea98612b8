"""What the tasks' `mmft demo` pages share: the image input, the check for missing inputs, scored labels as `gr.Label`
shows them, and the columns of a search hit. Each page itself lives in its task's package (`mmft/tasks/<name>/demo.py`)
and is named by `Task.demo`; `mmft demo` loads it through the registry (`mmft.demo.page.page_builder`).

Pages answer through the same code as the command line: the task's pipeline (`mmft predict`), `mmft.explain`
(`mmft explain`) and `mmft.tasks.retrieval.search` (`mmft search`). Images come in as the uploaded files, untouched
(`type="filepath"`, `image_mode=None`), so they are decoded as in training, by `mmft.image_utils.load_rgb`.

This module imports Gradio (the `mmft[demo]` extra): only `mmft demo` and the pages import it.
"""

from __future__ import annotations

import gradio as gr

HIT_COLUMNS = ["rank", "score", "match", "similarity", "item"]  # as `mmft search` prints them


def _image(label: str = "image", elem_id: str = "image") -> gr.Image:
    return gr.Image(type="filepath", image_mode=None, label=label, elem_id=elem_id, height=280)


def _needs(**values) -> None:
    missing = [name for name, value in values.items() if not (value.strip() if isinstance(value, str) else value)]
    if missing:
        raise gr.Error(f"missing: {', '.join(missing)}")


def _scored(results: list[dict], key: str) -> dict[str, float]:
    """A pipeline's scored labels as `gr.Label` shows them (label -> score, best first)."""
    return {result[key]: result["score"] for result in results}


__all__ = ["HIT_COLUMNS", "_image", "_needs", "_scored"]
