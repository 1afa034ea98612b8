"""Classification's `mmft demo` page (`ClassificationTask.demo`): image + text -> the probability of every label.

Loaded by `mmft demo` only (it imports Gradio, the `mmft[demo]` extra); the widgets it shares with the other tasks'
pages are `mmft.demo.widgets`.
"""

from __future__ import annotations

import gradio as gr

from ...demo.loaded import LoadedModel
from ...demo.widgets import _image, _needs, _scored


def classification_page(loaded: LoadedModel) -> None:
    """Image + text -> the probability of every label."""
    with gr.Row():
        with gr.Column():
            image = _image()
            text = gr.Textbox(label="text", placeholder="there is a red circle", elem_id="text")
            submit = gr.Button("Classify", variant="primary", elem_id="submit")
        with gr.Column():
            labels = gr.Label(label="label probabilities", elem_id="labels")

    def classify(image_path, statement):
        _needs(image=image_path, text=statement)
        return _scored(loaded.pipeline(image_path, text=statement), "label")

    submit.click(classify, [image, text], labels)


__all__ = ["classification_page"]
