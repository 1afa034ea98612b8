"""The README's "Build a model" example runs as written (offline names), and its quickstart names real targets."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_build_a_model_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", _section("Build a model"), flags=re.S)
    assert len(blocks) == 1, "the section should hold exactly one python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert tuple(namespace["logits"].shape) == (1, len(namespace["answers"]))
    assert namespace["reloaded"].config.id2label[0] == namespace["answers"][0]
    assert (tmp_path / "my-mmft" / "model.safetensors").is_file()


def test_quickstart_commands_are_make_targets():
    quickstart = _section("Quickstart")
    makefile = (README.parent / "Makefile").read_text()
    for target in ("train", "test"):
        assert f"make {target}" in quickstart
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"Makefile has no '{target}' target"
