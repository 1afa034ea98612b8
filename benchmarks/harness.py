"""Shared pieces of the mmft benchmarks: model specs, synthetic batches, a hand-written train step, interleaved
timing and memory probes. Every benchmark reports ratios of figures measured side by side in one process."""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = os.path.join(REPO, "recipes", "configs", "easy_vqa.yaml")


# -- models --------------------------------------------------------------------------------------------------------
@dataclass
class ModelSpec:
    """A benchmark model: two towers and a bridge, named as `from_vision_text_pretrained` takes them."""

    vision: str
    text: str  # a name, or "bert-base" for a random BERT-base tower built from its config
    description: str
    image_size: int = 224
    num_bridge_layers: int = 2
    hidden_size: int = 256
    num_attention_heads: int = 4
    vision_args: dict[str, Any] = field(default_factory=dict)
    patch_size: int = 16  # of the ViT vision tower: image tokens = (image_size / patch_size)^2 + 1


# Random text towers built from a config (no weights needed); other names load pretrained towers.
TEXT_CONFIGS: dict[str, dict[str, int]] = {
    "bert-base": {},  # BertConfig() defaults are BERT-base: 12 layers, width 768
    "bert-tiny": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
}


MODEL_SPECS: dict[str, ModelSpec] = {
    # Small but real: the towers are the real architectures, the text tower carries pretrained weights.
    "small": ModelSpec(
        vision="timm:vit_tiny_patch16_224",
        text="minilm",
        description="ViT-Ti/16 (timm, random init) + MiniLM-L6 (pretrained) + 2-layer co-attention, width 256",
        vision_args={"dynamic_img_size": True},
    ),
    # The GPU target; random-init towers from their configs (no weights can be downloaded here).
    "base": ModelSpec(
        vision="timm:vit_base_patch16_224",
        text="bert-base",
        description="ViT-B/16 (timm, random init) + BERT-base (random init) + 6-layer co-attention, width 768",
        num_bridge_layers=6,
        hidden_size=768,
        num_attention_heads=12,
    ),
    # For `--quick` smoke runs only: the same code paths in seconds; its figures mean nothing.
    "tiny": ModelSpec(
        vision="timm:vit_tiny_patch16_224",
        text="bert-tiny",
        description="tiny random towers (smoke runs only)",
        image_size=32,
        num_bridge_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        vision_args={
            "img_size": 32,
            "patch_size": 8,
            "depth": 1,
            "embed_dim": 32,
            "num_heads": 2,
            "dynamic_img_size": True,
        },
        patch_size=8,
    ),
}


def build_model(spec_name: str, num_answers: int = 13, **overrides: Any) -> nn.Module:
    """An `MMFTForVisualQuestionAnswering` of the named spec; `overrides` replace spec fields."""
    import dataclasses

    from transformers import BertConfig

    import mmft

    spec = dataclasses.replace(MODEL_SPECS[spec_name], **overrides)
    text = BertConfig(**TEXT_CONFIGS[spec.text]) if spec.text in TEXT_CONFIGS else spec.text
    torch.manual_seed(0)
    return mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
        vision=spec.vision,
        text=text,
        vision_model_args=spec.vision_args or None,
        labels=[f"answer{i}" for i in range(num_answers)],
        num_bridge_layers=spec.num_bridge_layers,
        hidden_size=spec.hidden_size,
        num_attention_heads=spec.num_attention_heads,
        hidden_dropout=0.0,
    )


# The `ModelArguments` fields that size a fresh model's bridge, as the recipe passes them.
BRIDGE_FIELDS = ("bridge", "num_bridge_layers", "hidden_size", "num_attention_heads", "hidden_dropout")


def recipe_model(task: Any, model_args: Any, data: Any, processor: Any = None, **config: Any) -> tuple[nn.Module, Any]:
    """(model, processor) of a fresh model as the recipe builds it, through mmft's public API only.

    `task`: a `mmft.Task` instance (`mmft.get_task(name)(args.task)`); `model_args`: `mmft.parse_recipe_args(...)
    .model`; `data`: the task's `TaskData`; `processor`: one already built from `model_args` (default: the task's).
    The task's model class joins the two towers, and its hooks add what the head needs from the data (labels, config
    fields). `config`: further `MMFTConfig` fields or `from_vision_text_pretrained` arguments, which win over the
    recipe's (`bridge`, `initializer_range`, a caption `decoder`, ...).
    """
    options = {
        **{name: getattr(model_args, name) for name in BRIDGE_FIELDS},
        **task.model_kwargs(data),
        **task.config_updates(data),
        **config,
    }
    model = task.model_class.from_vision_text_pretrained(
        vision=model_args.vision_model,
        text=model_args.text_model,
        vision_model_args=model_args.timm_args(),
        text_model_args=model_args.text_args(),
        **options,
    )
    processor = processor or task.build_processor(model_args)
    task.bind(model, processor)
    return model, processor


def base_model(model: nn.Module) -> nn.Module:
    """The mmft model itself, inside the peft wrapper a `LoraPlan` with LoRA towers returns (else `model`)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def apply_plan(model: nn.Module, plan: str) -> nn.Module:
    """'lora' | 'full' | 'frozen' for both towers (bridge and head are always trained)."""
    import logging

    from mmft import LoraPlan

    logging.getLogger("mmft.lora").setLevel(logging.ERROR)  # the plan's parameter report would flood the table
    return LoraPlan(vision=plan, text=plan).apply(model)


def synthetic_batch(
    model: nn.Module, batch_size: int, image_size: int, text_length: int, num_answers: int = 13, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random pixels, random (unpadded) token ids of `text_length`, random answer ids: shapes are what count here."""
    generator = torch.Generator().manual_seed(seed)
    config = getattr(model, "config", None) or model.get_base_model().config
    vocab = config.text_config.vocab_size
    input_ids = torch.randint(1000, vocab, (batch_size, text_length), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 101, 102  # [CLS] ... [SEP] in BERT vocabularies
    return {
        "pixel_values": torch.randn(batch_size, 3, image_size, image_size, generator=generator),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": torch.randint(0, num_answers, (batch_size,), generator=generator),
    }


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def autocast_for(device: str):
    """fp32 on CPU (the recipe's CPU precision); bf16 autocast on a GPU (what `--bf16` gives the Trainer)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()


def fused_adamw(parameters, lr: float = 1e-4, weight_decay: float = 0.0) -> torch.optim.AdamW:
    # The Trainer's default optimizer since torch 2.8 is `adamw_torch_fused`; use the same kernel.
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=True)


class HandStep:
    """A minimal hand-written training step: forward, backward, AdamW step, zero grads. No logging, no clipping."""

    def __init__(self, model: nn.Module, device: str, lr: float = 1e-4) -> None:
        self.model, self.device = model.to(device).train(), device
        self.optimizer = fused_adamw([p for p in model.parameters() if p.requires_grad], lr=lr)

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast_for(self.device):
            loss = self.model(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


# -- timing --------------------------------------------------------------------------------------------------------
def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleave(cases: dict[str, Callable[[], Any]], rounds: int, warmup: int, device: str) -> dict[str, list[float]]:
    """Time each case once per round, rotating the order every round, so machine noise hits every case alike."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = timed(cases[name], device)
            if round_index >= warmup:
                times[name].append(seconds)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- memory --------------------------------------------------------------------------------------------------------
def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """High-water resident set size of this process, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def saved_activation_bytes(model: nn.Module) -> Iterator[list[int]]:
    """Count the bytes autograd saves for backward (activations), each storage once, parameters excluded."""
    parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in seen and key not in parameter_storages:
            seen.add(key)
            total[0] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield total


def state_bytes(model: nn.Module) -> int:
    """Parameters + gradients + AdamW's two moments, in bytes (fp32 master weights)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return total + 3 * trainable


def device_peak_memory(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def machine_description(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
