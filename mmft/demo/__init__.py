"""`mmft demo`: a local web page (Gradio) to try a trained model, and the two files that put it on a Hugging Face Space.

    mmft demo outputs/easy_vqa                      # http://127.0.0.1:7860: image + question -> answers + heat map
    mmft demo outputs/scenes_retrieval --port 8000  # text -> images of a folder, image -> captions
    mmft demo outputs/scenes_captioning --write_space   # writes app.py + requirements.txt into the folder

The page is built for the task in the model's config by the function its `Task.demo` names, found through the task
registry (`mmft.tasks.TASKS`) and imported only then: each task's page lives in its own package
(`mmft/tasks/<name>/demo.py`), on the widgets the pages share (`mmft.demo.widgets`). Every answer comes from the
task's pipeline (or, for retrieval, from `mmft search`'s code), so the page preprocesses and decodes exactly as `mmft
predict` does. The model is loaded once, when the page is built. Importing this package does not import Gradio
(`pip install "mmft[demo]"`); building a page does.
"""

from __future__ import annotations

from .loaded import DemoError
from .page import build_demo, check_model, serve
from .space import write_space

__all__ = ["DemoError", "build_demo", "check_model", "serve", "write_space"]
