"""QLoRA: the Linear layers of frozen and LoRA towers in 4-bit NF4 (or 8-bit) through bitsandbytes.

`LoraPlan(quantize="4bit")` calls `quantize_towers` before it wraps the model: every `nn.Linear` of a tower planned
`frozen` or `lora` becomes a bitsandbytes `Linear4bit` (NF4, double-quantized statistics) or `Linear8bitLt`,
quantized on the device it will train on; embeddings, norms, convolutions, a `full` tower, the projections, the bridge
and the head stay in full precision. peft's `prepare_model_for_kbit_training` then freezes the base and casts any
half-precision weight left to fp32, and peft puts its bitsandbytes LoRA layers on the quantized targets.

Saving a merged model (`LoraPlan.merge`) first turns every quantized layer back into an fp32 `nn.Linear` holding
the dequantized weight (plus the layer's LoRA update, added in fp32, not re-quantized), so the saved folder is a
plain mmft model that loads anywhere and computes what the trained model computed.

4-bit needs a CUDA device, or a bitsandbytes build with a CPU backend (0.50.2 has one: the tests run on it);
`quantize_problem` probes for it so a plan that cannot run is refused when it is made, not mid-run.
"""

from __future__ import annotations

import torch
from torch import nn

QUANTIZE_MODES = ("4bit", "8bit")
_FLAGS = {"4bit": "is_loaded_in_4bit", "8bit": "is_loaded_in_8bit"}  # what peft and transformers look for


def quantize_problem(mode: str) -> str | None:
    """Why `mode` cannot run on this machine, with what to do; None when it can."""
    if mode not in QUANTIZE_MODES:
        return f"quantize={mode!r}; choose one of {', '.join(QUANTIZE_MODES)} (or None for full precision)"
    try:
        import bitsandbytes as bnb
    except Exception as error:  # ImportError, or a build that fails to load its native library
        return (
            f"quantize={mode!r} needs bitsandbytes, which cannot be imported here ({error}). Install it "
            "(`pip install bitsandbytes`, or `pip install 'mmft[qlora]'`) on a CUDA machine, or use quantize=None"
        )
    if torch.cuda.is_available():
        return None
    try:  # no CUDA: only a bitsandbytes build with a CPU backend can (de)quantize
        probe = torch.linspace(-1, 1, 64).reshape(2, 32)
        if mode == "4bit":
            packed, state = bnb.functional.quantize_4bit(probe, quant_type="nf4")
            bnb.functional.dequantize_4bit(packed, state)
        else:
            bnb.functional.int8_vectorwise_quant(probe)
    except Exception as error:
        return (
            f"quantize={mode!r}: there is no CUDA device and bitsandbytes {bnb.__version__} has no CPU backend "
            f"for {mode} ({type(error).__name__}: {error}). Run on a CUDA machine, install a bitsandbytes with a "
            "CPU backend (0.50 has one), or use quantize=None"
        )
    return None


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 matmuls on a GPU that has them (QLoRA's usual choice), else fp32."""
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def quantized_linear(linear: nn.Linear, mode: str, device: torch.device) -> nn.Module:
    """A bitsandbytes copy of `linear` on `device` (the move is what quantizes it), its weights frozen."""
    import bitsandbytes as bnb

    weight = linear.weight.detach().float().cpu()
    if mode == "4bit":
        layer = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=_compute_dtype(device),
            compress_statistics=True,
            quant_type="nf4",
        )
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True, quant_type="nf4")
        # bitsandbytes >= 0.50 repacks a 4-bit weight for its AVX512-BF16 CPU kernel at the first no-grad forward in
        # eval mode: that layout needs out_features % 32 == 0 and in_features % 64 == 0 (a tower narrower than one
        # quantization block fails with "shape '[32, 0]' is invalid"), computes in bf16, and fetches its kernel from
        # the Hub. The dequantize-then-matmul path works for every width, offline, in the layer's compute dtype.
        layer.support_avx512bf16_for_cpu = False
    else:
        layer = bnb.nn.Linear8bitLt(
            linear.in_features, linear.out_features, bias=linear.bias is not None, has_fp16_weights=False, threshold=6.0
        )
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.detach().float().cpu(), requires_grad=False)
    return layer.to(device)


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def quantize_towers(model: nn.Module, towers: dict[str, nn.Module], mode: str) -> int:
    """Quantize every `nn.Linear` of `towers` ({kind: tower module} of `model`) in place; returns how many.

    `model` is the task model: it is flagged `is_loaded_in_4bit` / `is_loaded_in_8bit` so that peft wraps the
    quantized layers with its bitsandbytes LoRA layers, then prepared with `prepare_model_for_kbit_training`.
    """
    from peft import prepare_model_for_kbit_training

    device, count = _device(), 0
    for tower in towers.values():
        for name, module in list(tower.named_modules()):
            if type(module) is nn.Linear:  # exactly nn.Linear: never re-quantize a bitsandbytes layer
                _replace(tower, name, quantized_linear(module, mode, device))
                count += 1
    setattr(model, _FLAGS[mode], True)
    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # --gradient_checkpointing decides
    return count


def _dequantized_weight(layer: nn.Module) -> torch.Tensor:
    import bitsandbytes as bnb

    weight = layer.weight
    if isinstance(layer, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
    # int8 rows times their scales, which the layer moves from the weight to its state on its first forward
    scales = weight.SCB if getattr(weight, "SCB", None) is not None else layer.state.SCB
    return bnb.functional.int8_vectorwise_dequant(weight.data, scales).float()


def _plain_linear(layer: nn.Module, weight: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None, device=weight.device)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if layer.bias is not None:
            linear.bias.copy_(layer.bias.float())
    return linear.requires_grad_(False)


def dequantize(model: nn.Module) -> int:
    """Replace every bitsandbytes layer of `model` by an fp32 `nn.Linear`, folding in the LoRA update of a peft
    LoRA layer around it (in fp32); returns how many. A model without quantized layers is left as it is."""
    if not any(type(m).__module__.startswith("bitsandbytes") for m in model.modules()):
        return 0  # nothing quantized: never import bitsandbytes for a plain model
    import bitsandbytes as bnb

    quantized = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    count = 0
    for name, module in list(model.named_modules()):
        wrapper = hasattr(module, "get_base_layer")  # a peft layer around a quantized one
        base = module.get_base_layer() if wrapper else module
        if not isinstance(base, quantized) or name.endswith(".base_layer"):  # a wrapped one goes with its wrapper
            continue
        weight = _dequantized_weight(base)
        if wrapper and not module.merged:
            for adapter in module.active_adapters:
                if adapter in getattr(module, "lora_A", {}):
                    weight = weight + module.get_delta_weight(adapter).float()
        _replace(model, name, _plain_linear(base, weight))
        count += 1
    for flagged in model.modules():
        for flag in _FLAGS.values():
            if getattr(flagged, flag, False):
                setattr(flagged, flag, False)
    return count


__all__ = ["QUANTIZE_MODES", "dequantize", "quantize_problem", "quantize_towers", "quantized_linear"]
