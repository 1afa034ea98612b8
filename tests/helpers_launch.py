"""Run the VQA recipe on tiny random towers through `accelerate launch` and read back what it wrote.

Shared by the multi-process and resume tests: one command builder, blocking and background launches, and loaders
for the files a run leaves (safetensors weights, trainer_state.json, test_results.json).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import IMAGE_SIZE, TINY_TIMM_VIT, tiny_text_config, tiny_vision_config
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, TrainerCallback, ViTImageProcessor

from mmft.towers import resolve_name

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")
PRESET = REPO / "recipes" / "configs" / "easy_vqa.yaml"  # recipes/vqa.py's demo preset, named by --config on other data
VQA_RECIPE = REPO / "recipes" / "vqa.py"
# Keys of a log entry that measure time, not training: they differ between any two runs.
TIMING_KEYS = {
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "eval_runtime",
    "eval_samples_per_second",
    "eval_steps_per_second",
    "test_runtime",
    "test_samples_per_second",
    "test_steps_per_second",
    "total_flos",
}
# ThroughputCallback's figures are timings too, except its FLOP count, which is a function of the batch.
TIMING_PREFIX, UNTIMED_PERF_KEYS = "perf/", {"perf/flops_per_step"}


def _is_timing(key: str) -> bool:
    return key in TIMING_KEYS or (key.startswith(TIMING_PREFIX) and key not in UNTIMED_PERF_KEYS)


def save_tiny_text_tower(path: Path, dropout: float, kind: str = "bert") -> Path:
    """A random 1-layer BERT (or RoBERTa) with MiniLM's tokenizer, saved as a local text tower folder."""
    torch.manual_seed(0)
    config = tiny_text_config(kind)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    AutoModel.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_name("minilm")).save_pretrained(path)
    return path


def save_tiny_vision_tower(path: Path, kind: str, dropout: float = 0.0) -> Path:
    """A random HF vision tower of `kind` (conftest's tiny configs) with an image processor, saved as a local folder."""
    torch.manual_seed(0)
    config = tiny_vision_config(kind)
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout"):
        if hasattr(config, name):
            setattr(config, name, dropout)
    AutoModel.from_config(config).save_pretrained(path)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    return path


def tiny_tower_flags(text_dir: Path, vision: str | None = None) -> list[str]:
    """Any recipe's model flags for tiny towers at 32 px: a tiny timm ViT from scratch (or the HF tower folder
    `vision`), the tiny text tower folder `text_dir`, and a 1-layer, 32-wide, 2-head bridge."""
    tower = ["--vision_model", vision] if vision else ["--vision_model", "timm:vit_tiny_patch16_224"]
    tower += [] if vision else ["--vision_model_args", json.dumps(TINY_TIMM_VIT)]
    bridge = {"--num_bridge_layers": "1", "--hidden_size": "32", "--num_attention_heads": "2"}
    return [*tower, "--image_size", "32", "--text_model", str(text_dir), *(t for kv in bridge.items() for t in kv)]


def recipe_argv(output_dir: Path, text_dir: Path, data_dir: Path, *extra: str, vision: str | None = None) -> list[str]:
    """Flags of recipes/vqa.py for tiny towers: a tiny timm ViT from scratch, or the HF tower folder `vision`."""
    return [
        "--dataset",
        str(data_dir),
        *tiny_tower_flags(text_dir, vision),
        "--per_device_eval_batch_size",
        "8",
        "--learning_rate",
        "1e-3",
        "--lr_scheduler_type",
        "linear",
        "--warmup_steps",
        "2",
        "--eval_strategy",
        "no",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
        "--report_to",
        "none",
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def free_port() -> int:
    """A TCP port nobody listens on now (for the rendezvous of a multi-process launch)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def recipe_command(
    output_dir: Path,
    text_dir: Path,
    data_dir: Path,
    *extra: str,
    processes: int = 1,
    vision: str | None = None,
    script: Path = VQA_RECIPE,
) -> list[str]:
    """`accelerate launch` of recipes/vqa.py (or another VQA `script`) on 1 process (cpu.yaml) or N gloo processes
    (multi_gpu.yaml); recipes/vqa.py gets `--config` its demo preset (on a dataset of its own it would start from the
    task's defaults for real data)."""
    config = "cpu.yaml" if processes == 1 else "multi_gpu.yaml"
    preset = ["--config", str(PRESET)] if script == VQA_RECIPE else []
    port = ["--main_process_port", str(free_port())] if processes > 1 else []  # parallel test workers launch too
    return [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(REPO / "accelerate_configs" / config),
        *port,
        "--num_processes",
        str(processes),
        "--num_cpu_threads_per_process",
        "1",
        str(script),
        *preset,
        *recipe_argv(output_dir, text_dir, data_dir, *extra, vision=vision),
    ]


class StepRecorder(TrainerCallback):
    """The optimizer steps a run trains (a resumed run starts after its checkpoint's)."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def run_task_recipe(task: str, argv: list[str], preset: Path, callbacks: list | None = None) -> dict[str, float]:
    """What `recipes/<task>.py --config <preset> <argv>` runs (the `preset`, its demo preset, then the flags), in
    this process; its test metrics. Use with conftest's `one_cpu_thread` for the arithmetic of a launch with one
    thread."""
    from mmft.arguments import parse_recipe_args
    from mmft.training import run

    return run(task, parse_recipe_args(["--config", str(preset), *argv], task, default_config=str(preset)), callbacks)


def run_vqa_recipe(argv: list[str], callbacks: list | None = None) -> dict[str, float]:
    """What `recipes/vqa.py --config <its demo preset> <argv>` runs, in this process; its test metrics."""
    return run_task_recipe("vqa", argv, PRESET, callbacks)


def run_in_process(
    output_dir: Path,
    text_dir: Path,
    data_dir: Path,
    *extra: str,
    vision: str | None = None,
    callbacks: list | None = None,
) -> dict[str, float]:
    """The same recipe run as `recipe_command(...)` with 1 process, in this process."""
    return run_vqa_recipe(recipe_argv(output_dir, text_dir, data_dir, *extra, vision=vision), callbacks)


def _environment() -> dict[str, str]:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_recipe(command: list[str], timeout: float = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=_environment(), cwd=REPO, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def kill_when(command: list[str], log_path: Path, ready, timeout: float = 1800) -> None:
    """Start `command` in its own process group and SIGKILL the whole group as soon as `ready(log_text)` holds."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=_environment(), cwd=REPO, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    try:
        while not ready(log_path.read_text()):
            ended = process.poll() is not None
            assert not ended, f"run ended (rc={process.returncode}) before the kill:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "timed out waiting for the kill moment"
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher and the training process it started
        process.wait()


def logged_steps(log_text: str) -> int:
    """Optimizer steps a run has logged so far (`--logging_steps 1` prints one dict per step)."""
    return sum(line.startswith("{'loss'") for line in log_text.splitlines())


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def log_history(checkpoint: Path) -> list[dict]:
    """trainer_state.json's log history without timing keys."""
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [{k: v for k, v in entry.items() if not _is_timing(k)} for entry in history]


def final_metrics(output_dir: Path) -> dict[str, float]:
    results = json.loads((output_dir / "test_results.json").read_text())
    return {k: v for k, v in results.items() if not _is_timing(k)}
