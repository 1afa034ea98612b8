"""Precision and device flags of the recipe on a machine without a GPU: `--use_cpu` by default, bf16 yes, fp16 no."""

from __future__ import annotations

import pytest
import torch

from mmft.arguments import parse_recipe_args

pytestmark = pytest.mark.skipif(torch.accelerator.is_available(), reason="checks the behaviour on CPU-only machines")


def _training_args(tmp_path, *flags: str):
    return parse_recipe_args(["--output_dir", str(tmp_path), "--report_to", "none", *flags])[3]  # TrainingArguments


def test_cpu_only_machine_defaults_to_use_cpu(tmp_path):
    # Without it, `accelerate launch --num_processes 2` would start two unconnected single-process runs.
    assert _training_args(tmp_path).use_cpu is True
    assert _training_args(tmp_path, "--use_cpu", "false").use_cpu is False  # an explicit flag wins


def test_bf16_runs_on_the_cpu(tmp_path):
    args = _training_args(tmp_path, "--bf16")
    assert args.bf16 and args.device.type == "cpu"


def test_fp16_on_the_cpu_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="--fp16 needs a GPU.*--bf16"):
        _training_args(tmp_path, "--fp16")
