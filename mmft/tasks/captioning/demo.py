"""Captioning's `mmft demo` page (`CaptioningTask.demo`): image -> a caption, by greedy or beam search.

Loaded by `mmft demo` only (it imports Gradio, the `mmft[demo]` extra); the widgets it shares with the other tasks'
pages are `mmft.demo.widgets`.
"""

from __future__ import annotations

import gradio as gr

from ...demo.loaded import LoadedModel
from ...demo.widgets import _image, _needs


def captioning_page(loaded: LoadedModel) -> None:
    """Image -> a caption, by greedy or beam search, up to a chosen length."""
    with gr.Row():
        with gr.Column():
            image = _image()
            decoding = gr.Radio(["greedy", "beam search"], value="greedy", label="decoding", elem_id="decoding")
            with gr.Row():
                beams = gr.Slider(2, 8, value=3, step=1, label="beams (beam search)", elem_id="num_beams")
                length = gr.Slider(1, 64, value=32, step=1, label="max new tokens", elem_id="max_new_tokens")
            submit = gr.Button("Caption", variant="primary", elem_id="submit")
        with gr.Column():
            caption = gr.Textbox(label="caption", interactive=False, elem_id="caption")

    def describe(image_path, how, num_beams, max_new_tokens):
        _needs(image=image_path)
        options = {"max_new_tokens": int(max_new_tokens), "num_beams": int(num_beams) if how == "beam search" else 1}
        return loaded.pipeline(image_path, **options)[0]["generated_text"]

    submit.click(describe, [image, decoding, beams, length], caption)


__all__ = ["captioning_page"]
