"""Benchmark 3: LoRA vs full vs frozen towers on one model: trainable parameters, peak memory, step time.

Step time: the three plans train side by side in one process, interleaved step by step. Peak memory: each plan in
a process of its own (`--worker`), so one plan's high-water mark cannot hide another's. On a CPU that is the peak
RSS, also shown above the process's RSS right after `import torch, transformers, mmft` (the part training adds);
on a GPU, `torch.cuda.max_memory_allocated`. The bridge and head are trained under every plan.

    python benchmarks/plans.py [--model small|base] [--batch 16]
    python benchmarks/plans.py --model base --batch 32 --device cuda     # the issue's GPU target
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
from harness import (
    MODEL_SPECS,
    HandStep,
    apply_plan,
    build_model,
    current_rss,
    device_peak_memory,
    interleave,
    median,
    peak_rss,
    synthetic_batch,
    to_device,
)

PLANS = ("lora", "full", "frozen")
TEXT_LENGTH = 16  # tokens per question: VQA questions are short


def measure_memory(model_name: str, plan: str, batch_size: int, steps: int, device: str) -> dict:
    """Inside a fresh process: build, apply the plan, train `steps` steps; RSS and device peaks."""
    import peft  # noqa: F401  (import costs belong to the baseline, not to the plan)
    import timm  # noqa: F401

    import mmft  # noqa: F401

    baseline = current_rss()
    model = apply_plan(build_model(model_name), plan)
    spec = MODEL_SPECS[model_name]
    batch = to_device(synthetic_batch(model, batch_size, spec.image_size, TEXT_LENGTH), device)
    step = HandStep(model, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):  # AdamW allocates its state on the first step; later steps show the steady peak
        step(batch)
    return {"baseline_rss": baseline, "peak_rss": peak_rss(), "device_peak": device_peak_memory(device)}


def memory_in_subprocesses(
    model_name: str, plans: tuple[str, ...], batch_size: int, steps: int, device: str
) -> dict[str, dict]:
    """{plan: memory peaks} from one fresh process per plan. On a CPU the processes run at once (a process's peak
    RSS is its own, and the interpreter start-up is most of their time); on a GPU one after another, so their
    allocations never compete for the device."""

    def start(plan: str) -> subprocess.Popen:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            "--model",
            model_name,
            "--plan",
            plan,
            "--batch",
            str(batch_size),
            "--steps",
            str(steps),
            "--device",
            device,
        ]
        return subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )

    def finish(plan: str, process: subprocess.Popen) -> dict:
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"plans worker for {plan!r} failed:\n{stderr[-3000:]}")
        return json.loads(stdout.strip().splitlines()[-1])

    if device == "cpu":
        processes = {plan: start(plan) for plan in plans}
        return {plan: finish(plan, process) for plan, process in processes.items()}
    return {plan: finish(plan, start(plan)) for plan in plans}


def trainable(model) -> dict[str, int]:
    from mmft import LoraPlan

    counts = LoraPlan.trainable_parameters(model)
    counts["total_parameters"] = sum(p.numel() for p in model.parameters())
    return counts


def run(
    model_name: str = "small",
    batch_size: int = 16,
    rounds: int = 8,
    warmup: int = 2,
    device: str = "cpu",
    memory_steps: int = 3,
    time_steps: bool = True,
    quick: bool = False,
) -> dict:
    """Per plan: trainable parameters, memory peaks (separate processes), median step time (interleaved).
    `quick` (a smoke run) measures memory in this process instead, one plan after another: its peaks are then
    cumulative and mean nothing, but no interpreter starts three more times."""
    results: dict[str, dict] = {plan: {} for plan in PLANS}
    if quick:
        memory = {plan: measure_memory(model_name, plan, batch_size, memory_steps, device) for plan in PLANS}
    else:
        memory = memory_in_subprocesses(model_name, PLANS, batch_size, memory_steps, device)
    for plan in PLANS:
        results[plan].update(memory[plan])
    steps, batch = {}, None
    for plan in PLANS:
        model = apply_plan(build_model(model_name), plan)
        results[plan].update(trainable(model))
        if time_steps:
            spec = MODEL_SPECS[model_name]
            batch = batch or to_device(synthetic_batch(model, batch_size, spec.image_size, TEXT_LENGTH), device)
            steps[plan] = HandStep(model, device)
    if time_steps:
        times = interleave({plan: (lambda s=steps[plan]: s(batch)) for plan in PLANS}, rounds, warmup, device)
        for plan in PLANS:
            results[plan]["step_s"] = median(times[plan])
    full = results["full"]
    for plan in PLANS:
        row = results[plan]
        row["training_rss"] = row["peak_rss"] - row["baseline_rss"]
        row["peak_rss_vs_full"] = row["peak_rss"] / full["peak_rss"]
        row["training_rss_vs_full"] = row["training_rss"] / max(full["peak_rss"] - full["baseline_rss"], 1)
        if row.get("device_peak"):
            row["device_peak_vs_full"] = row["device_peak"] / full["device_peak"]
        if "step_s" in row:
            row["step_vs_full"] = row["step_s"] / full["step_s"]
    return {
        "model": model_name,
        "description": MODEL_SPECS[model_name].description,
        "batch_size": batch_size,
        "plans": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", choices=sorted(MODEL_SPECS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="training steps per memory worker")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory_only", action="store_true", help="skip the interleaved step timing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plan", choices=PLANS, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        print(json.dumps(measure_memory(options.model, options.plan, options.batch, options.steps, options.device)))
        return
    result = run(
        options.model, options.batch, options.rounds, 2, options.device, options.steps, not options.memory_only
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
