"""The two files that run a model's `mmft demo` page on a Hugging Face Space, written into the model's folder.

`app.py` builds the same page as `mmft demo` (`mmft.demo.build_demo`); `requirements.txt` installs this mmft with its
`demo` extra. Beside the model's files (the model repo itself, or `python app.py` in the folder) app.py loads them;
copied into a Space of its own, it loads the model from its Hub repo. Gradio is not needed to write them.
"""

from __future__ import annotations

from pathlib import Path

APP_FILE, REQUIREMENTS_FILE = "app.py", "requirements.txt"

_APP = '''"""This model's demo page (what `mmft demo` serves), on a Hugging Face Space or here: `python app.py`.

Written by mmft {version}. {where}
"""

from pathlib import Path

from mmft.demo import build_demo

HERE = Path(__file__).resolve().parent
MODEL = {model}

demo = build_demo(MODEL)  # loads the model once
if __name__ == "__main__":
    demo.launch()  # a Space sets GRADIO_SERVER_NAME; run locally, Gradio serves this machine only (127.0.0.1)
'''


def write_space(model_dir: str | Path, repo_id: str | None = None) -> list[Path]:
    """Write `app.py` and `requirements.txt` into the model folder `model_dir`; their paths.

    `repo_id`: the Hub repo the model is pushed to, which app.py loads when it runs where the model's files are not.
    """
    from mmft import __version__

    from .loaded import DemoError

    folder = Path(model_dir)
    if not folder.is_dir():
        raise DemoError(f"{model_dir} is no local folder to write a Space's app.py into")
    if repo_id:
        model = f'str(HERE) if (HERE / "config.json").is_file() else {repo_id!r}'
        where = (
            f"Beside the model's files it loads them; copied into a Space of its own, it loads the model from the "
            f"Hub repo {repo_id}."
        )
    else:
        model, where = "str(HERE)", "It loads the model whose files are beside it."
    app = folder / APP_FILE
    app.write_text(_APP.format(version=__version__, where=where, model=model), encoding="utf-8")
    requirements = folder / REQUIREMENTS_FILE
    requirements.write_text(f"mmft[demo]=={__version__}\n", encoding="utf-8")
    return [app, requirements]


__all__ = ["APP_FILE", "REQUIREMENTS_FILE", "write_space"]
