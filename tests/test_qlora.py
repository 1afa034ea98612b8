"""QLoRA (`LoraPlan(quantize="4bit" | "8bit")`): refused where it cannot run, real where it can.

bitsandbytes (>= 0.48) has a CPU backend, so on this machine the real path runs: towers' Linear layers quantized
(NF4 / int8), bridge and head full precision, LoRA adapters training on top, and a merged save that is a plain fp32
mmft model computing what the trained model computed. The GPU memory benchmark is `benchmarks/qlora.py`.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from conftest import tiny_model, train_steps
from torch import nn

from mmft import LoraPlan
from mmft.lora import tower_names
from mmft.quantize import quantize_problem, quantized_linear
from mmft.unwrap import task_model

needs_4bit = pytest.mark.skipif(quantize_problem("4bit") is not None, reason=str(quantize_problem("4bit")))
MODES = ["4bit", "8bit"]
MERGE_TOLERANCE = {"4bit": 1e-4, "8bit": 3e-2}


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(8, 3, 32, 32, generator=generator),
        "input_ids": torch.randint(1000, 2000, (8, 8), generator=generator),
        "attention_mask": torch.ones(8, 8, dtype=torch.long),
        "labels": torch.tensor([0, 1, 2, 3] * 2),
    }


def _bnb_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if type(m).__module__.startswith("bitsandbytes")}


def test_unknown_mode_is_refused_at_plan_construction():
    with pytest.raises(ValueError, match="quantize='3bit'; choose one of 4bit, 8bit"):
        LoraPlan(quantize="3bit")


def test_refused_without_bitsandbytes(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    with pytest.raises(ValueError, match=r"needs bitsandbytes.*pip install bitsandbytes.*quantize=None"):
        LoraPlan(vision="lora", text="frozen", quantize="4bit")
    LoraPlan(vision="lora", text="frozen")  # control: a full-precision plan needs nothing


@needs_4bit
def test_refused_without_cuda_and_without_a_cpu_backend(monkeypatch):
    import bitsandbytes

    def no_backend(*args, **kwargs):
        raise NotImplementedError("no kernel for the CPU")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bitsandbytes.functional, "quantize_4bit", no_backend)
    with pytest.raises(ValueError, match=r"no CUDA device and bitsandbytes .* has no CPU backend for 4bit"):
        LoraPlan(quantize="4bit")
    monkeypatch.undo()
    LoraPlan(quantize="4bit")  # control: with the backend, the plan is made


@needs_4bit
@pytest.mark.parametrize("mode", MODES)
def test_towers_quantized_bridge_and_head_full_precision(mode):
    model = LoraPlan(vision="lora", text="frozen", r=4, quantize=mode).apply(tiny_model())
    quantized = _bnb_layers(model)
    towers = tower_names(model)
    assert quantized and all(any(name.startswith(p + ".") for p in towers.values()) for name in quantized)
    for name, module in model.named_modules():
        inside_tower = any(name.startswith(p + ".") for p in towers.values())
        if type(module) is nn.Linear and inside_tower:
            assert ".lora_" in name, f"{name} stayed full precision inside a quantized tower"
        if not inside_tower and isinstance(module, nn.Linear):
            assert type(module) is nn.Linear and module.weight.dtype == torch.float32, name  # bridge, head, projections
    lora_wrappers = [m for m in model.modules() if type(m).__module__ == "peft.tuners.lora.bnb"]
    assert lora_wrappers, "peft did not put its bitsandbytes LoRA layers on the quantized targets"


@needs_4bit
@pytest.mark.parametrize("in_features,out_features", [(32, 16), (48, 24), (128, 96)])
def test_4bit_layers_of_any_width_run_in_eval_and_compute_their_dequantized_weight(in_features, out_features):
    """Widths a user's towers have, also below bitsandbytes' 64-value quantization block, in eval mode without grad:
    where bitsandbytes would repack weights for its AVX512-BF16 CPU kernel (widths of 32 and 64 only, bf16, a kernel
    fetched from the Hub), mmft's layers stay on the dequantize-then-matmul path and compute exactly that."""
    import bitsandbytes as bnb

    linear = nn.Linear(in_features, out_features)
    layer = quantized_linear(linear, "4bit", torch.device("cpu")).eval()
    inputs = torch.randn(5, in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = layer(inputs)
    dequantized = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    expected = nn.functional.linear(inputs, dequantized, linear.bias.detach())
    assert torch.allclose(output, expected, atol=1e-5), (output - expected).abs().max()
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)


@needs_4bit
def test_a_full_tower_is_not_quantized():
    model = LoraPlan(vision="frozen", text="full", quantize="4bit").apply(tiny_model())
    text_prefix = tower_names(model)["text"]
    assert not [name for name in _bnb_layers(model) if name.startswith(text_prefix + ".")]
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(text_prefix + "."))


@needs_4bit
@pytest.mark.parametrize("mode", MODES)
def test_adapters_train_on_frozen_quantized_weights_and_merge_in_fp32(mode, tmp_path):
    model = LoraPlan(vision="lora", text="lora", r=4, dropout=0.0, quantize=mode).apply(tiny_model())
    packed = {name: m.weight.detach().clone() for name, m in _bnb_layers(model).items()}
    losses = train_steps(model, _batch(), steps=8)
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(m.weight, packed[name]) for name, m in _bnb_layers(model).items())  # frozen
    model.eval()
    with torch.no_grad():
        trained = model(**_batch(1)).logits
    unadapted = copy.deepcopy(model)  # negative control: the same merge without the LoRA updates
    for name, parameter in unadapted.named_parameters():
        if "lora_B" in name:
            parameter.data.zero_()
    merged = LoraPlan.merge(model)
    assert not _bnb_layers(merged) and not hasattr(merged, "peft_config")
    with torch.no_grad():
        error = (merged(**_batch(1)).logits - trained).abs().max().item()
        error_unadapted = (LoraPlan.merge(unadapted)(**_batch(1)).logits - trained).abs().max().item()
    print(f"{mode}: merged vs trained {error:.2e}; merged without the LoRA updates {error_unadapted:.2e}")
    # NF4 weights dequantize to exactly what the 4-bit matmul used; int8 matmuls also round the activations
    assert error < MERGE_TOLERANCE[mode] and error_unadapted > 10 * error
    merged.save_pretrained(tmp_path)  # a plain fp32 model: loads without bitsandbytes or a quantization config
    loaded = type(merged).from_pretrained(tmp_path, use_safetensors=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**_batch(1)).logits, merged(**_batch(1)).logits)


@needs_4bit
def test_4bit_towers_hold_about_a_seventh_of_the_fp32_bytes():
    def tower_bytes(model: nn.Module) -> int:
        tower = task_model(model).towers()["text"]
        return sum(t.numel() * t.element_size() for t in [*tower.parameters(), *tower.buffers()])

    full = tower_bytes(tiny_model())
    quantized = tower_bytes(LoraPlan(vision="frozen", text="frozen", quantize="4bit").apply(tiny_model()))
    # the tiny BERT's 1M parameters are mostly its 30522-word embedding table, which stays fp32
    linear = sum(
        m.weight.numel() * 4 for m in task_model(tiny_model()).towers()["text"].modules() if type(m) is nn.Linear
    )
    assert full - quantized > 0.8 * linear  # NF4: 0.5 byte per weight plus block statistics, vs 4 bytes


@needs_4bit
@pytest.mark.e2e
def test_recipe_trains_with_lora_quantize_and_saves_a_plain_model(tmp_path, one_cpu_thread):
    from helpers_data import make_imagefolder
    from helpers_launch import run_in_process, save_tiny_text_tower, weights

    from mmft import MMFTForVisualQuestionAnswering

    text = save_tiny_text_tower(tmp_path / "bert", dropout=0.0)
    output_dir = tmp_path / "out"
    metrics = run_in_process(
        output_dir,
        text,
        make_imagefolder(tmp_path / "data"),
        "--lora_quantize",
        "4bit",
        "--lora_vision",
        "lora",
        "--lora_text",
        "frozen",
        "--lora_r",
        "4",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "4",
        "--save_steps",
        "4",
    )
    assert "test_accuracy" in metrics
    saved = weights(output_dir / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in saved.values())  # dequantized: no packed 4-bit tensors
    assert not [k for k in saved if "absmax" in k or "quant" in k or "lora_" in k]
    model = MMFTForVisualQuestionAnswering.from_pretrained(output_dir, use_safetensors=True)
    assert not _bnb_layers(model)
