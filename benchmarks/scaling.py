"""Benchmark 5: step time and memory against batch size, image resolution, question length and bridge depth.

One axis at a time moves away from a base point; the points of an axis are timed interleaved (round-robin) in one
process. Memory on a CPU is the activation memory autograd saves for backward (each storage once, counted by
`saved_tensors_hooks`; exact and noise-free) plus parameters, gradients and AdamW state; on a GPU it is
`torch.cuda.max_memory_allocated`. `growth` is the local exponent d log(cost) / d log(driver) between neighbouring
points, where the driver is what the axis multiplies: samples, image tokens, text tokens or layers. An exponent
above 1 is faster than linear growth.

    python benchmarks/scaling.py [--plot docs/benchmarks_scaling.png]
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from harness import (
    MODEL_SPECS,
    HandStep,
    apply_plan,
    build_model,
    device_peak_memory,
    interleave,
    median,
    saved_activation_bytes,
    state_bytes,
    synthetic_batch,
    to_device,
)

MODEL = "small"
BASE = {"batch": 8, "resolution": 224, "text_length": 16, "bridge_layers": 2}
AXES = {
    "batch": [4, 8, 16, 32],
    "resolution": [64, 224, 384],
    "text_length": [16, 64, 128, 256],
    "bridge_layers": [1, 2, 4, 6],
}
QUICK_AXES = {"batch": [1, 2], "resolution": [32, 64], "text_length": [8, 16], "bridge_layers": [1, 2]}
QUICK_BASE = {"batch": 2, "resolution": 32, "text_length": 8, "bridge_layers": 1}


def driver(axis: str, value: int, patch_size: int) -> float:
    """What an axis multiplies: samples, image tokens (+ the class token), text tokens, layers."""
    return (value // patch_size) ** 2 + 1 if axis == "resolution" else value


def _activation_bytes(step: HandStep, batch: dict) -> int:
    with saved_activation_bytes(step.model) as counted:
        loss = step.model(**batch).loss
    loss.backward()
    step.optimizer.zero_grad(set_to_none=True)
    return counted[0]


def _device_peak(step: HandStep, batch: dict, device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    torch.cuda.reset_peak_memory_stats()
    step(batch)
    return device_peak_memory(device)


def run_axis(
    axis: str,
    values: list[int],
    base: dict,
    steps: dict[int, HandStep],
    rounds: int,
    warmup: int,
    device: str,
    model_name: str,
) -> list[dict]:
    """Time the points of one axis round-robin; count their activation memory; local growth exponents."""
    points = []
    for value in values:
        point = {**base, axis: value}
        step = steps[point["bridge_layers"]]
        batch = synthetic_batch(step.model, point["batch"], point["resolution"], point["text_length"])
        points.append((value, step, to_device(batch, device)))
    cases = {str(value): (lambda s=step, b=batch: s(b)) for value, step, batch in points}
    times = interleave(cases, rounds, warmup, device)
    rows = []
    for value, step, batch in points:
        model = step.model
        rows.append(
            {
                "model": model_name,
                "axis": axis,
                "value": value,
                "driver": driver(axis, value, MODEL_SPECS[model_name].patch_size),
                "step_s": median(times[str(value)]),
                "activation_bytes": _activation_bytes(step, batch),
                "state_bytes": state_bytes(model),
                "device_peak": _device_peak(step, batch, device),
            }
        )
    for previous, row in zip(rows, rows[1:]):
        scale = math.log(row["driver"] / previous["driver"])
        row["time_growth"] = math.log(row["step_s"] / previous["step_s"]) / scale
        row["activation_growth"] = math.log(row["activation_bytes"] / previous["activation_bytes"]) / scale
    return rows


def run(device: str = "cpu", rounds: int = 3, warmup: int = 1, quick: bool = False) -> list[dict]:
    """Every axis of `AXES` around `BASE` on the small model (`--quick`: tiny model, tiny axes)."""
    model_name = "tiny" if quick else MODEL
    axes, base = (QUICK_AXES, QUICK_BASE) if quick else (AXES, BASE)
    layer_counts = sorted(set(axes["bridge_layers"]) | {base["bridge_layers"]})
    # One model per bridge depth; timm's dynamic image size lets one ViT take every resolution.
    steps = {
        n: HandStep(apply_plan(build_model(model_name, num_bridge_layers=n), "full"), device) for n in layer_counts
    }
    rows = []
    for axis, values in axes.items():
        rows += run_axis(axis, values, base, steps, rounds, warmup, device, model_name)
    return rows


def plot(rows: list[dict], path: str) -> None:
    """One panel per axis: step time and activation memory relative to the axis's first point, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = list(dict.fromkeys(row["axis"] for row in rows))
    figure, panels = plt.subplots(1, len(axes_names), figsize=(4 * len(axes_names), 3.6))
    labels = {"batch": "samples", "resolution": "image tokens", "text_length": "text tokens", "bridge_layers": "layers"}
    for panel, axis in zip(panels, axes_names):
        points = [row for row in rows if row["axis"] == axis]
        x = [row["driver"] / points[0]["driver"] for row in points]
        for key, label in (("step_s", "step time"), ("activation_bytes", "activation memory")):
            panel.plot(x, [row[key] / points[0][key] for row in points], marker="o", label=label)
        panel.plot(x, x, linestyle="--", color="gray", label="linear")
        panel.set_xscale("log")
        panel.set_yscale("log")
        panel.set_title(f"{axis} ({', '.join(str(row['value']) for row in points)})")
        panel.set_xlabel(f"{labels[axis]} (relative)")
    panels[0].set_ylabel("cost relative to first point")
    panels[0].legend()
    figure.suptitle(f"mmft scaling: {MODEL_SPECS[rows[0]['model']].description}, full fine-tuning")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plot", default=None, help="write a PNG plot here")
    options = parser.parse_args()
    rows = run(options.device, options.rounds, 1, options.quick)
    print(json.dumps(rows, indent=1))
    if options.plot:
        plot(rows, options.plot)


if __name__ == "__main__":
    main()
