"""QLoRA memory: LoRA adapters on full-precision towers vs on 4-bit NF4 towers (`LoraPlan(quantize="4bit")`).

Both towers `lora` (r=16, attention), the bridge and head trained in full precision under both plans. Each plan runs in
a process of its own, a few steps of a hand-written training loop on one synthetic batch: on a GPU its
`torch.cuda.max_memory_allocated`, on a CPU its peak RSS above the RSS right after the imports; under both, the bytes
the towers' weights hold (parameters and buffers, as stored).

    python benchmarks/qlora.py --device cuda --model base --batch 32    # the GPU figure for docs/benchmarks.md
    python benchmarks/qlora.py --model small --batch 8                  # CPU (bitsandbytes' CPU backend)
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
    base_model,
    build_model,
    current_rss,
    device_peak_memory,
    peak_rss,
    synthetic_batch,
    to_device,
)

PLANS = {"lora": None, "qlora": "4bit"}  # plan name -> LoraPlan.quantize
TEXT_LENGTH = 16


def tower_bytes(model: torch.nn.Module) -> int:
    towers = base_model(model).towers().values()
    return sum(t.numel() * t.element_size() for tower in towers for t in [*tower.parameters(), *tower.buffers()])


def measure(model_name: str, plan: str, batch_size: int, steps: int, device: str) -> dict:
    """Inside a fresh process: build, apply the plan, train `steps` steps; memory peaks and tower bytes."""
    import peft  # noqa: F401  (import costs belong to the baseline)
    import timm  # noqa: F401

    from mmft import LoraPlan

    if PLANS[plan]:
        import bitsandbytes  # noqa: F401
    baseline = current_rss()
    model = LoraPlan(vision="lora", text="lora", quantize=PLANS[plan]).apply(build_model(model_name))
    batch = to_device(synthetic_batch(model, batch_size, MODEL_SPECS[model_name].image_size, TEXT_LENGTH), device)
    step = HandStep(model, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    losses = [float(step(batch)) for _ in range(steps)]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "tower_bytes": tower_bytes(model),
        "trainable": trainable,
        "baseline_rss": baseline,
        "peak_rss": peak_rss(),
        "device_peak": device_peak_memory(device),
        "losses": losses,
    }


def run(model_name: str, batch_size: int, steps: int, device: str) -> dict:
    results = {}
    for plan in PLANS:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            plan,
            "--model",
            model_name,
            "--batch",
            str(batch_size),
            "--steps",
            str(steps),
            "--device",
            device,
        ]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if done.returncode != 0:
            raise RuntimeError(f"{plan} worker failed:\n{done.stderr[-3000:]}")
        results[plan] = json.loads(done.stdout.strip().splitlines()[-1])
    lora, qlora = results["lora"], results["qlora"]
    ratios = {
        "tower_bytes": qlora["tower_bytes"] / lora["tower_bytes"],
        "training_rss": (qlora["peak_rss"] - qlora["baseline_rss"]) / (lora["peak_rss"] - lora["baseline_rss"]),
    }
    if lora["device_peak"]:
        ratios["device_peak"] = qlora["device_peak"] / lora["device_peak"]
    return {
        "model": model_name,
        "description": MODEL_SPECS[model_name].description,
        "batch_size": batch_size,
        "device": device,
        "plans": results,
        "qlora_vs_lora": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", choices=sorted(MODEL_SPECS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="training steps per plan (AdamW state from step 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", choices=PLANS, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        print(json.dumps(measure(options.model, options.worker, options.batch, options.steps, options.device)))
        return
    print(json.dumps(run(options.model, options.batch, options.steps, options.device), indent=1))


if __name__ == "__main__":
    main()
