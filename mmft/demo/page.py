"""The demo page: which model folders have one, loading the model once, building and serving the page, and the
`mmft demo` subcommand."""

from __future__ import annotations

import argparse
import atexit
import importlib
import importlib.util
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .loaded import INSTALL, DemoError, LoadedModel

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def check_model(model: str) -> type:
    """The task class of the mmft model in the folder (or Hub repo id) `model`; a DemoError when it holds none."""
    from transformers import AutoConfig

    import mmft  # noqa: F401  (registers the mmft config with AutoConfig)

    from ..configuration_mmft import MMFTConfig
    from ..tasks import task_for_model

    folder = Path(model)
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise DemoError(f"{model} is not an mmft model folder: it has no config.json")
    if not folder.is_dir() and (folder.exists() or not _HUB_ID.fullmatch(model)):
        raise DemoError(f"{model} is not an mmft model: there is no such folder, and it is no Hub repo id")
    try:
        config = AutoConfig.from_pretrained(model)
    except Exception as error:  # unreadable JSON, an unknown model_type, a Hub repo that does not resolve
        raise DemoError(f"{model} is not an mmft model: its config does not load ({type(error).__name__})") from None
    if config.model_type != MMFTConfig.model_type:
        raise DemoError(f"{model} is not an mmft model: its config.json is of model_type {config.model_type!r}")
    try:
        return task_for_model(config)
    except ValueError:
        raise DemoError(f"{model} is no model of an mmft task: its architectures are {config.architectures}") from None


def check_page(model: str, task: type) -> None:
    """A DemoError when `task` declares no page (`Task.demo`): before a page is served or a Space's app.py written."""
    if not getattr(task, "demo", None):
        from ..tasks import TASKS

        pages = sorted(name for name in TASKS if getattr(TASKS[name], "demo", None))
        raise DemoError(
            f"{model} holds a {task.name!r} model, and that task has no demo (its Task.demo names no page; there are "
            f"demos for {', '.join(pages) or 'no task'})"
        )


def page_builder(model: str, task: type) -> Callable[[LoadedModel], None]:
    """The function that builds `task`'s page, the one its `Task.demo` names ("module:function", imported here and
    nowhere else); a DemoError when the task declares none or Gradio is missing."""
    check_page(model, task)
    if importlib.util.find_spec("gradio") is None:
        raise DemoError(f"mmft demo needs Gradio, which is not installed: {INSTALL}")
    module, function = task.demo.split(":")
    return getattr(importlib.import_module(module), function)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_demo(model: str, device: str | None = None):
    """The `gradio.Blocks` page of the mmft model in `model` (a folder or Hub repo id), with the model loaded once."""
    task = check_model(model)
    build = page_builder(model, task)
    import gradio as gr

    from ..loading import load_model

    device = device or default_device()
    network, processor, _ = load_model(model)
    pipe = task.pipeline_class(model=network, processor=processor, device=device)
    workdir = Path(tempfile.mkdtemp(prefix="mmft-demo-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    loaded = LoadedModel(model, pipe.model, processor, task, pipe, device, workdir)
    name = Path(model).resolve().name if Path(model).is_dir() else model
    with gr.Blocks(title=f"{name} (mmft {task.name})", analytics_enabled=False) as demo:
        gr.Markdown(
            f"## {name}\n{task.card.summary[0].upper()}{task.card.summary[1:]}, built with mmft "
            f"(`{network.config.bridge}` bridge)."
        )
        build(loaded)
    return demo


def serve(
    model: str,
    server_name: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    device: str | None = None,
    block: bool = True,
):
    """Build the page of `model` and serve it on `server_name:port` (this machine only by default; a public
    gradio.live link only with `share=True`); `block=False` returns the running page (`.close()` stops it)."""
    demo = build_demo(model, device)
    demo.launch(server_name=server_name, server_port=port, share=share, prevent_thread_lock=not block, show_error=True)
    return demo


# -- `mmft demo` ----------------------------------------------------------------------------------------------------
def add_command(commands, device: str) -> None:
    """Add the `demo` subcommand to `mmft`'s subparsers."""
    demo = commands.add_parser("demo", help="a local web page (Gradio) to try a trained model in the browser")
    demo.add_argument("model", metavar="MODEL_DIR", help="a saved mmft folder or Hub repo id")
    demo.add_argument("--server_name", default="127.0.0.1", help="address to serve on (default: this machine only)")
    demo.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    demo.add_argument("--share", action="store_true", help="also make a public gradio.live link (never by default)")
    demo.add_argument("--device", default=device)
    demo.add_argument(
        "--write_space",
        action="store_true",
        help="write a Hugging Face Space's app.py and requirements.txt into MODEL_DIR, then exit",
    )
    demo.add_argument(
        "--repo_id",
        help="with --write_space: the Hub repo of the model, which app.py loads when it runs in a Space of its own",
    )
    demo.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    from .space import write_space

    try:
        if args.write_space:
            check_page(args.model, check_model(args.model))  # an app.py that could only refuse is not written
            for path in write_space(args.model, args.repo_id):
                print(f"mmft demo: wrote {path}", file=sys.stderr)
            return 0
        serve(args.model, args.server_name, args.port, args.share, args.device)
    except DemoError as error:
        print(f"mmft demo: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "DemoError",
    "LoadedModel",
    "add_command",
    "build_demo",
    "check_model",
    "check_page",
    "page_builder",
    "serve",
]
