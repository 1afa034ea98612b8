"""`LoraPlan`: per-tower lora / full / frozen fine-tuning, turned into one peft `LoraConfig`.

The model says what its towers are (`model.towers()`) and which modules train whatever the plan
(`model.trained_module_names()`: everything that is not a tower — bridge, projections, the task head); the plan only
decides about towers. LoRA targets are resolved by each tower kind's spec (`mmft.towers.TOWER_SPECS[kind]
.lora_targets`) from the actual module names of whichever towers the model has (timm fused `qkv`/`proj`, HF
`query`/`key`/`value`/`dense`, CLIP `q_proj`/`v_proj`, ...), so one plan works across tower families; a tower asked
for LoRA that has no matching layer is an error, and so is a model tower of a kind the registry does not know.

Learning rates (`--tower_learning_rate`, `--layer_decay`, see `mmft.param_groups`): a `full` tower's weights train at
the tower rate; LoRA adapter weights train at `--learning_rate`, with the bridge and head. They are new, start at zero
and are low-rank, so a pretrained tower's low rate would leave them almost untrained.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields

from torch import nn

from .quantize import dequantize, quantize_problem, quantize_towers
from .towers import TOWER_SPECS
from .unwrap import task_model

logger = logging.getLogger(__name__)

TOWER_MODES = ("lora", "full", "frozen")
TARGET_SETS = ("attention", "attention+mlp")
TOWERS = tuple(TOWER_SPECS)  # the plan's slots, one per tower kind; a model names its towers by kind in `towers()`


@dataclass
class LoraPlan:
    """
    How to fine-tune each tower: `"lora"` (low-rank adapters), `"full"` (every weight) or `"frozen"`.

    `decoder` is the caption decoder of a captioning model (its embeddings and `lm_head` included); a model without
    one ignores it. Its default, `"lora"`, adapts a pretrained LM to captions for a few percent of the cost of
    `"full"` in optimizer memory, while its vocabulary and output layer stay as pretrained.

    Example:

    ```python
    >>> model = LoraPlan(vision="full", text="lora", r=16).apply(model)  # a peft model
    >>> merged = LoraPlan.merge(model)  # a plain mmft model with the adapters folded in
    ```
    """

    vision: str = "lora"
    text: str = "lora"
    decoder: str = "lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: str = "attention"
    quantize: str | None = None  # "4bit" / "8bit": QLoRA, frozen and LoRA towers through bitsandbytes

    def __post_init__(self) -> None:
        for tower in TOWERS:
            if getattr(self, tower) not in TOWER_MODES:
                raise ValueError(f"LoraPlan.{tower}={getattr(self, tower)!r}; choose one of {', '.join(TOWER_MODES)}")
        if self.targets not in TARGET_SETS:
            raise ValueError(f"LoraPlan.targets={self.targets!r}; choose one of {', '.join(TARGET_SETS)}")
        if self.r < 1:
            raise ValueError(f"LoraPlan.r must be >= 1, got {self.r}")
        if self.quantize is not None and (problem := quantize_problem(self.quantize)):
            raise ValueError(f"LoraPlan: {problem}")  # refused now, not after the data and model are loaded

    def target_modules(self, model: nn.Module) -> dict[str, list[str]]:
        """Qualified names of the Linear layers that get adapters, per tower planned as `"lora"`."""
        roles = {"attention"} if self.targets == "attention" else {"attention", "mlp"}
        found: dict[str, list[str]] = {}
        towers = task_model(model).towers()
        for kind, prefix in tower_names(model).items():
            if getattr(self, kind) != "lora":
                continue
            names = [f"{prefix}.{name}" for name in TOWER_SPECS[kind].lora_targets(towers[kind], roles)]
            if not names:
                tower_config = towers[kind].model.config
                architecture = getattr(tower_config, "architecture", None) or tower_config.model_type
                raise ValueError(
                    f"LoRA ({self.targets}) matches no layer of the {kind} tower ({architecture}); it has no "
                    f"attention/MLP Linear layers that mmft recognises. Use {kind}='full' or {kind}='frozen'"
                )
            found[kind] = names
        return found

    def apply(self, model: nn.Module) -> nn.Module:
        """Freeze, wrap and return the model: a peft model when any tower uses LoRA, else the model itself."""
        towers = tower_names(model)
        if self.quantize:  # before the adapters, so that peft puts its bitsandbytes LoRA layers on them
            quantized = {
                kind: module for kind, module in task_model(model).towers().items() if getattr(self, kind) != "full"
            }
            quantize_towers(task_model(model), quantized, self.quantize)
        targets = self.target_modules(model)
        full = [prefix for kind, prefix in towers.items() if getattr(self, kind) == "full"]
        if not targets:  # no adapters: plain requires_grad switches, no peft wrapper needed
            for name, parameter in model.named_parameters():
                tower = next((p for p in towers.values() if name.startswith(p + ".")), None)
                parameter.requires_grad = tower is None or tower in full
            self.report(model)
            return model
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=[name for names in targets.values() for name in names],
            modules_to_save=[*task_model(model).trained_module_names(), *full],
        )
        peft_model = get_peft_model(model, config)
        if fsdp_launch():
            # FSDP shards module by module and walks children without de-duplicating: a module held under both
            # of peft's slots would be sharded twice. Under FSDP the copy is sharded too, so it costs less.
            logger.info("FSDP launch: keeping peft's separate trained copy of the bridge, head and full towers")
        else:
            train_in_place(peft_model)
        self.report(peft_model)
        return peft_model

    @staticmethod
    def merge(model: nn.Module) -> nn.Module:
        """Fold LoRA weights into their layers and return the plain mmft model (trained copies kept); quantized
        layers come back in fp32, their LoRA update added in fp32 (see `mmft.quantize.dequantize`)."""
        dequantize(model)
        return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

    @staticmethod
    def trainable_parameters(model: nn.Module) -> dict[str, int]:
        """Trainable parameter counts per part: each tower, and the rest (bridge, head, ...)."""
        towers = tower_names(model)
        counts = {**{kind: 0 for kind in towers}, "bridge+head": 0}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                part = next((k for k, p in towers.items() if f".{p}." in f".{name}"), "bridge+head")
                counts[part] += parameter.numel()
        return counts

    def report(self, model: nn.Module) -> None:
        counts = self.trainable_parameters(model)
        total = sum(p.numel() for p in model.parameters())
        plan = ", ".join(f"{kind}={getattr(self, kind)}" for kind in tower_names(model))
        parts = ", ".join(f"{part} {count:,}" for part, count in counts.items())
        logger.warning(
            "LoraPlan(%s, r=%d) trainable parameters: %s (%.2f%% of %s)",
            plan,
            self.r,
            parts,
            100 * sum(counts.values()) / total,
            f"{total:,}",
        )


def fsdp_launch() -> bool:
    """Whether `accelerate launch` was given an FSDP config (it tells the processes through the environment)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in {"1", "true", "yes"}


def train_in_place(peft_model: nn.Module) -> None:
    """Train each `modules_to_save` module in place instead of in a copy.

    peft keeps an untouched original beside a trained copy of every module it saves (bridge, projections, head, a
    fully trained tower), so that adapters can be switched off. mmft never switches them off, and the copy cost a
    second bridge (117M parameters with ViT-B/BERT-base and 6 bridge layers). Pointing the trained slot at the
    original module frees the copy; saving, loading and merging see the same tensors under the same names. (Inside
    `peft_model.disable_adapter()` these modules then keep their trained weights.)
    """
    from peft.utils import ModulesToSaveWrapper

    for wrapper in [m for m in peft_model.modules() if isinstance(m, ModulesToSaveWrapper)]:
        for adapter in list(wrapper.modules_to_save):
            wrapper.modules_to_save[adapter] = wrapper.original_module
        wrapper.original_module.requires_grad_(True)


def tower_names(model: nn.Module) -> dict[str, str]:
    """{tower kind: qualified module name in `model`} (names as `model.named_modules()` gives them). A tower of a
    kind that `TOWER_SPECS` does not know is refused: no plan slot decides about it."""
    towers = task_model(model).towers()
    if unknown := sorted(set(towers) - set(TOWER_SPECS)):
        raise ValueError(
            f"{type(task_model(model)).__name__}.towers() names tower kind(s) {unknown} that mmft.towers.TOWER_SPECS "
            f"does not know (known: {', '.join(TOWER_SPECS)}); register a spec for each kind"
        )
    by_id = {id(module): kind for kind, module in towers.items()}
    return {by_id[id(module)]: name for name, module in model.named_modules() if id(module) in by_id}


# Every tower kind is a plan slot: a kind registered without its LoraPlan field would be planned by nobody.
if missing := sorted(set(TOWER_SPECS) - {field.name for field in fields(LoraPlan)}):
    raise TypeError(f"LoraPlan has no slot for tower kind(s) {missing}; add a field for each")
