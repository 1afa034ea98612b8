"""Generative VQA's `mmft demo` page (`GenerativeVQATask.demo`): image + question -> a generated answer.

Loaded by `mmft demo` only (it imports Gradio, the `mmft[demo]` extra); the widgets it shares with the other tasks'
pages are `mmft.demo.widgets`.
"""

from __future__ import annotations

import gradio as gr

from ...demo.loaded import LoadedModel
from ...demo.widgets import _image, _needs


def generative_vqa_page(loaded: LoadedModel) -> None:
    """Image + question -> the decoder's answer, by greedy or beam search, up to a chosen length."""
    with gr.Row():
        with gr.Column():
            image = _image()
            question = gr.Textbox(label="question", placeholder="what color is the shape?", elem_id="text")
            decoding = gr.Radio(["greedy", "beam search"], value="greedy", label="decoding", elem_id="decoding")
            with gr.Row():
                beams = gr.Slider(2, 8, value=3, step=1, label="beams (beam search)", elem_id="num_beams")
                length = gr.Slider(1, 64, value=16, step=1, label="max new tokens", elem_id="max_new_tokens")
            submit = gr.Button("Answer", variant="primary", elem_id="submit")
        with gr.Column():
            answer = gr.Textbox(label="answer (generated)", interactive=False, elem_id="answer")

    def respond(image_path, text, how, num_beams, max_new_tokens):
        _needs(image=image_path, question=text)
        options = {"max_new_tokens": int(max_new_tokens), "num_beams": int(num_beams) if how == "beam search" else 1}
        return loaded.pipeline(image_path, text=text, **options)[0]["generated_text"]

    submit.click(respond, [image, question, decoding, beams, length], answer)


__all__ = ["generative_vqa_page"]
