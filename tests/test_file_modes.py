"""Every file mmft saves has the mode an ordinary file gets under the umask (safetensors alone would write 0600).

A model saved as root in a Docker image, or on a shared server, must load for another user: the weights of the final
model, of every checkpoint, of a LoRA adapter and of a merged model are `0666 & ~umask` like the config beside them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tiny_model

from mmft import LoraPlan
from mmft.atomic import atomic_path, atomic_write_text
from mmft.file_modes import current_umask, ordinary_file_mode


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


def test_the_ordinary_mode_follows_the_umask(umask, tmp_path):
    assert current_umask() == umask
    (tmp_path / "plain.txt").write_text("written by open()")
    assert ordinary_file_mode() == 0o666 & ~umask == _modes(tmp_path)["plain.txt"]


@pytest.mark.parametrize("plan", [None, LoraPlan(vision="lora", text="lora", r=4)], ids=["plain", "merged_lora"])
def test_save_pretrained_writes_weights_with_the_ordinary_mode(plan, umask, tmp_path):
    model = tiny_model() if plan is None else LoraPlan.merge(plan.apply(tiny_model()))
    model.save_pretrained(tmp_path)
    modes = _modes(tmp_path)
    assert "model.safetensors" in modes and set(modes.values()) == {0o666 & ~umask}, modes


@pytest.mark.e2e
@pytest.mark.parametrize("merged", ["true", "false"], ids=["merged", "adapter"])
def test_every_file_of_a_run_has_the_ordinary_mode(merged, umask, tmp_path, tiny_text_dir, one_cpu_thread):
    """Final model (merged or a LoRA adapter), processor, card, results and each checkpoint's weights, optimizer and
    RNG states."""
    from helpers_data import make_imagefolder
    from helpers_launch import run_in_process

    output_dir = tmp_path / "out"
    run_in_process(
        output_dir,
        tiny_text_dir,
        make_imagefolder(tmp_path / "data"),
        "--lora_vision",
        "lora",
        "--lora_text",
        "lora",
        "--lora_r",
        "4",
        "--save_merged",
        merged,
        "--max_steps",
        "2",
        "--save_steps",
        "1",
        "--per_device_train_batch_size",
        "8",
    )
    modes = _modes(output_dir)
    weights = [name for name in modes if name.endswith(".safetensors")]
    assert any("/" not in name for name in weights) and any(name.startswith("checkpoint-") for name in weights), modes
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != 0o666 & ~umask}
    assert not wrong, f"expected {oct(0o666 & ~umask)} under umask {oct(umask)}: {wrong}"


def test_an_atomic_write_is_whole_or_absent_and_has_the_ordinary_mode(umask, tmp_path):
    target = tmp_path / "state.json"
    atomic_write_text(target, "first")  # mkstemp alone would leave it 0600
    assert target.read_text() == "first" and _modes(tmp_path) == {"state.json": 0o666 & ~umask}
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "first" and sorted(_modes(tmp_path)) == ["state.json"]  # no temporary file left
