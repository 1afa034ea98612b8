"""FLOPs of one training step, counted by `torch.utils.flop_counter.FlopCounterMode`, and the machine's peak.

The counter is exact for matmuls, convolutions and attention (forward and backward); elementwise ops are not
counted, as is customary for MFU. PyTorch has no formula for the CPU flash-attention kernel that SDPA picks on a
CPU, so one is supplied here from PyTorch's own SDPA counting functions.
"""

from __future__ import annotations

import time

import torch
from harness import autocast_for, synchronize
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten

# Dense bf16 peak of accelerators by name fragment (vendor datasheets, without sparsity).
GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


_EXTRA_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}
PARTS = ("vision_tower", "text_tower", "bridge")


def flop_counter() -> FlopCounterMode:
    """A silent `FlopCounterMode` that also counts the CPU flash-attention kernel."""
    return FlopCounterMode(display=False, depth=None, custom_mapping=_EXTRA_FORMULAS)


def train_step_flops(model: nn.Module, batch: dict[str, torch.Tensor], device: str = "cpu") -> dict[str, int]:
    """FLOPs of forward + backward on `batch` ("total"), and the forward FLOPs of each part.

    Backward FLOPs are exact in total but not split per part: PyTorch's module tracker cannot follow gradients
    through modules that return dataclasses (the towers and the bridge do), so the split is given for the forward.
    """
    model.zero_grad(set_to_none=True)
    forward, backward = flop_counter(), flop_counter()
    with forward, autocast_for(device):
        loss = model(**batch).loss
    with backward:
        loss.backward()
    model.zero_grad(set_to_none=True)
    counts = {name: sum(ops.values()) for name, ops in forward.get_flop_counts().items()}
    flops = {"total": forward.get_total_flops() + backward.get_total_flops(), "forward": forward.get_total_flops()}
    for part in PARTS:
        # The shortest module path ending in the part's name is the part itself (peft wraps add prefixes).
        names = sorted((name for name in counts if name.endswith(f".{part}")), key=len)
        flops[f"forward_{part}"] = counts[names[0]] if names else 0
    return flops


def matmul_peak(device: str = "cpu", size: int = 2048, repeats: int = 3) -> float:
    """Achieved FLOP/s of a square matmul: the CPU's practical peak, measured in this run."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm the kernel and the caches
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def table_peak(device: str) -> tuple[float | None, str]:
    """A GPU's datasheet bf16 peak, or (None, reason) when the card is not in the table."""
    name = torch.cuda.get_device_name()
    for fragment, peak in GPU_PEAK_BF16.items():
        if fragment in name:
            return peak, f"{name}: datasheet dense bf16 {peak / 1e12:.0f} TFLOPS"
    return None, f"{name}: not in GPU_PEAK_BF16"
