"""`LoraPlan`: per-tower lora / full / frozen fine-tuning, turned into one peft `LoraConfig`.

The bridge, projections and task head are always trained. LoRA targets are resolved from the actual module names of
whichever towers the model has (timm fused `qkv`/`proj`, HF `query`/`key`/`value`/`dense`, CLIP `q_proj`/`v_proj`,
...), so one plan works across tower families; a tower asked for LoRA that has no matching layer is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

logger = logging.getLogger(__name__)

TOWER_MODES = ("lora", "full", "frozen")
TARGET_SETS = ("attention", "attention+mlp")
TOWERS = {"vision": "vision_tower", "text": "text_tower"}
# Trained in full whatever the plan: everything of MMFTModel that is not a tower, plus the task head.
ALWAYS_TRAINED = ("vision_projection", "text_projection", "modality_embeddings", "bridge", "classifier")

_ATTENTION_LEAVES = {
    "query", "key", "value", "q_proj", "k_proj", "v_proj", "out_proj", "o_proj", "qkv", "q_lin", "k_lin", "v_lin",
    "out_lin", "query_proj", "key_proj", "value_proj", "in_proj",
}  # fmt: skip
_MLP_LEAVES = {"fc1", "fc2", "up_proj", "down_proj", "gate_proj", "lin1", "lin2"}


def _layer_kind(name: str) -> str | None:
    """'attention', 'mlp' or None for a Linear layer's qualified name inside a tower."""
    parts = name.split(".")
    leaf, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
    if leaf in _ATTENTION_LEAVES or (leaf == "proj" and parent.endswith("attn")):
        return "attention"
    if leaf == "dense":  # BERT family: attention.output.dense / intermediate.dense / output.dense
        return "attention" if "attention" in parts else "mlp"
    if leaf in _MLP_LEAVES:
        return "mlp"
    return None


@dataclass
class LoraPlan:
    """
    How to fine-tune each tower: `"lora"` (low-rank adapters), `"full"` (every weight) or `"frozen"`.

    Example:

    ```python
    >>> model = LoraPlan(vision="full", text="lora", r=16).apply(model)  # a peft model
    >>> merged = LoraPlan.merge(model)  # a plain mmft model with the adapters folded in
    ```
    """

    vision: str = "lora"
    text: str = "lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: str = "attention"

    def __post_init__(self) -> None:
        for tower in TOWERS:
            if getattr(self, tower) not in TOWER_MODES:
                raise ValueError(f"LoraPlan.{tower}={getattr(self, tower)!r}; choose one of {', '.join(TOWER_MODES)}")
        if self.targets not in TARGET_SETS:
            raise ValueError(f"LoraPlan.targets={self.targets!r}; choose one of {', '.join(TARGET_SETS)}")
        if self.r < 1:
            raise ValueError(f"LoraPlan.r must be >= 1, got {self.r}")

    def target_modules(self, model: nn.Module) -> dict[str, list[str]]:
        """Qualified names of the Linear layers that get adapters, per tower planned as `"lora"`."""
        kinds = {"attention"} if self.targets == "attention" else {"attention", "mlp"}
        found: dict[str, list[str]] = {}
        for tower, attribute in TOWERS.items():
            if getattr(self, tower) != "lora":
                continue
            names = [
                name
                for name, module in model.named_modules()
                if f".{attribute}." in f".{name}" and isinstance(module, nn.Linear) and _layer_kind(name) in kinds
            ]
            if not names:
                tower_config = getattr(_base(model), attribute).model.config
                architecture = getattr(tower_config, "architecture", None) or tower_config.model_type
                raise ValueError(
                    f"LoRA ({self.targets}) matches no layer of the {tower} tower ({architecture}); it has no "
                    f"attention/MLP Linear layers that mmft recognises. Use {tower}='full' or {tower}='frozen'"
                )
            found[tower] = names
        return found

    def apply(self, model: nn.Module) -> nn.Module:
        """Freeze, wrap and return the model: a peft model when any tower uses LoRA, else the model itself."""
        targets = self.target_modules(model)
        full_towers = [TOWERS[t] for t in TOWERS if getattr(self, t) == "full"]
        if not targets:  # no adapters: plain requires_grad switches, no peft wrapper needed
            for name, parameter in model.named_parameters():
                parameter.requires_grad = not any(f".{t}." in f".{name}" for t in TOWERS.values()) or any(
                    f".{t}." in f".{name}" for t in full_towers
                )
            self.report(model)
            return model
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=[name for names in targets.values() for name in names],
            modules_to_save=[m for m in (*ALWAYS_TRAINED, *full_towers) if _has_module(model, m)],
        )
        peft_model = get_peft_model(model, config)
        self.report(peft_model)
        return peft_model

    @staticmethod
    def merge(model: nn.Module) -> nn.Module:
        """Fold LoRA weights into their layers and return the plain mmft model (trained copies kept)."""
        return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

    @staticmethod
    def trainable_parameters(model: nn.Module) -> dict[str, int]:
        """Trainable parameter counts per part: vision tower, text tower, and the rest (bridge, head, ...)."""
        counts = {"vision": 0, "text": 0, "bridge+head": 0}
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            part = next((t for t, a in TOWERS.items() if f".{a}." in f".{name}"), "bridge+head")
            counts[part] += parameter.numel()
        return counts

    def report(self, model: nn.Module) -> None:
        counts = self.trainable_parameters(model)
        total = sum(p.numel() for p in model.parameters())
        logger.warning(
            "LoraPlan(vision=%s, text=%s, r=%d) trainable parameters: vision %s, text %s, bridge+head %s "
            "(%.2f%% of %s)",
            self.vision, self.text, self.r, f"{counts['vision']:,}", f"{counts['text']:,}",
            f"{counts['bridge+head']:,}", 100 * sum(counts.values()) / total, f"{total:,}",
        )  # fmt: skip


def _base(model: nn.Module) -> nn.Module:
    """The MMFTModel inside a task model (or inside a peft wrapper around it)."""
    for module in model.modules():
        if hasattr(module, "vision_tower") and hasattr(module, "bridge"):
            return module
    raise TypeError(f"{type(model).__name__} is not an mmft model")


def _has_module(model: nn.Module, leaf: str) -> bool:
    return any(name.split(".")[-1] == leaf for name, _ in model.named_modules())
