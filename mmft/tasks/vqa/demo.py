"""VQA's `mmft demo` page (`VQATask.demo`): image + question -> the top answers, and `mmft explain`'s heat map.

Loaded by `mmft demo` only (it imports Gradio, the `mmft[demo]` extra); the widgets it shares with the other tasks'
pages are `mmft.demo.widgets`.
"""

from __future__ import annotations

import hashlib

import gradio as gr

from ...demo.loaded import LoadedModel
from ...demo.widgets import _image, _needs, _scored


def vqa_page(loaded: LoadedModel) -> None:
    """Image + question -> the top answers with their scores, and the bridge's attention over the image."""
    labels = loaded.model.config.num_labels
    with gr.Row():
        with gr.Column():
            image = _image()
            question = gr.Textbox(label="question", placeholder="what color is the shape?", elem_id="text")
            top_k = gr.Slider(1, max(labels, 1), value=min(5, labels), step=1, label="answers shown", elem_id="top_k")
            submit = gr.Button("Answer", variant="primary", elem_id="submit")
        with gr.Column():
            answers = gr.Label(label="answers", elem_id="answers")
            gr.Markdown("Where the question looks: the bridge's text-to-image attention, per layer (`mmft explain`)")
            heatmap = gr.Image(show_label=False, elem_id="heatmap")
            note = gr.Markdown(elem_id="note")

    def answer(image_path, text, shown):
        _needs(image=image_path, question=text)
        results = loaded.pipeline(image_path, question=text, top_k=int(shown))
        heat, message = _explanation(loaded, image_path, text)
        return _scored(results, "answer"), heat, message

    submit.click(answer, [image, question, top_k], [answers, heatmap, note])


def _explanation(loaded: LoadedModel, image_path: str, question: str) -> tuple[str | None, str]:
    """(PNG of `mmft explain`'s heat map, "") or (None, why there is none)."""
    from ...explain import explain, plot_explanation
    from ...image_utils import load_rgb

    picture = load_rgb(image_path)
    try:
        result = explain(loaded.model, loaded.processor, picture, question)
    except ValueError as error:  # a bridge without cross-attention
        return None, f"No heat map: {error}."
    out = loaded.workdir / "heatmaps" / f"{hashlib.sha256(f'{image_path}|{question}'.encode()).hexdigest()[:16]}.png"
    return str(plot_explanation(picture, question, result, out)), ""


__all__ = ["vqa_page"]
