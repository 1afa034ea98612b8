"""Benchmark 4: model FLOPs utilisation = FLOPs per training step / step time / peak FLOP/s.

FLOPs per step are counted on a real forward + backward by `FlopCounterMode` (towers + bridge + head; matmuls,
convolutions and attention). On a CPU the peak is a large fp32 matmul timed in the same run, alternating with the
training steps so both see the same machine load; on a GPU it is the card's datasheet bf16 peak.

    python benchmarks/mfu.py                                    # preset + small model on this machine
    python benchmarks/mfu.py --device cuda --model base --batch 64
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
from flops_util import matmul_peak, table_peak, train_step_flops
from harness import MODEL_SPECS, HandStep, apply_plan, build_model, interleave, median, synthetic_batch, to_device
from plans import TEXT_LENGTH


def _measure(name: str, model, batch, device: str, rounds: int, warmup: int) -> dict:
    step = HandStep(model, device)
    step(batch)  # fills caches (the preset's frozen-text cache) so the count sees the steady state
    flops = train_step_flops(model, batch, device)
    cases = {"step": lambda: step(batch)}
    peaks: list[float] = []
    if not device.startswith("cuda"):
        cases["peak_probe"] = lambda: peaks.append(matmul_peak(device))
    times = interleave(cases, rounds, warmup, device)
    step_s = median(times["step"])
    if device.startswith("cuda"):
        peak, peak_source = table_peak(device)
    else:
        peaks = peaks[-rounds:]
        peak, peak_source = (
            median(peaks),
            f"fp32 2048^3 matmul in this run (median; best {max(peaks) / 1e9:.0f} GFLOP/s)",
        )
    return {
        "config": name,
        "batch_size": batch["pixel_values"].shape[0],
        "flops_per_step": flops["total"],
        "forward_split": {k.removeprefix("forward_"): v for k, v in flops.items() if k.startswith("forward")},
        "step_s": step_s,
        "achieved_flops": flops["total"] / step_s,
        "peak_flops": peak,
        "peak_source": peak_source,
        "mfu": flops["total"] / step_s / peak if peak else None,
    }


def preset_case(device: str, quick: bool):
    """The recipe's model and one real batch from its DataLoader."""
    from recipe_parts import capture_recipe

    parts = capture_recipe(device, quick)
    return copy.deepcopy(parts.model), to_device(next(iter(parts.train_dataloader)), device)


def spec_case(model_name: str, plan: str, batch_size: int, device: str):
    model = apply_plan(build_model(model_name), plan)
    spec = MODEL_SPECS[model_name]
    return model, to_device(synthetic_batch(model, batch_size, spec.image_size, TEXT_LENGTH), device)


def run(
    cases: list[tuple[str, str, int]], device: str = "cpu", rounds: int = 6, warmup: int = 1, quick: bool = False
) -> list[dict]:
    """`cases`: (model name or "preset", plan, batch size)."""
    results = []
    for model_name, plan, batch_size in cases:
        if model_name == "preset":
            model, batch = preset_case(device, quick)
            label = "easy-VQA preset (recipe model, batch from its loader)"
        else:
            model, batch = spec_case(model_name, plan, batch_size, device)
            label = f"{model_name} ({plan})"
        results.append(_measure(label, model, batch, device, rounds, warmup))
        del model, batch
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, choices=sorted(MODEL_SPECS), help="default: preset and small")
    parser.add_argument("--plan", default="full", choices=("lora", "full", "frozen"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    options = parser.parse_args()
    cases = (
        [(options.model, options.plan, options.batch)]
        if options.model
        else [("preset", "", 0), ("small", options.plan, options.batch)]
    )
    print(json.dumps(run(cases, options.device, options.rounds), indent=1))


if __name__ == "__main__":
    main()
