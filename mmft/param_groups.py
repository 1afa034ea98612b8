"""Optimizer parameter groups: the pretrained towers at their own learning rate, with an optional layer-wise decay.

`--tower_learning_rate` sets the rate of the towers' own weights; the new modules (bridge, projections, modality
embeddings, the task head) and every LoRA adapter keep `--learning_rate`. LoRA adapters count as new modules: they
start from zero (their `B` matrix) and are small, and at a tower's low rate they would hardly move.

`--layer_decay d` (0 < d <= 1) scales the rate down each tower: with blocks numbered 1..L from the input, block i
trains at `tower_lr * d ** (L - i)`; what comes before the first block (embeddings, patch embedding, class token,
a CNN's stem) is layer 0, at `tower_lr * d ** L`, the lowest; what comes after the last block (a final norm) trains
with the last block, at `tower_lr`. A block is found by its name, whichever family the tower comes from: HF encoders
and decoders (`encoder.layer.N`, `layers.N`, `h.N`), timm ViTs (`blocks.N`), timm CNNs (`stages.N`, `blocks.N`,
`layerN`); a nested name counts at its outermost index, so CNNs decay by stage.

HF's weight-decay split stays as it is: each of these groups is split again into parameters with weight decay and
parameters without (biases, norms), as `Trainer.get_decay_parameter_names` says.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from torch import nn

from .unwrap import task_model

logger = logging.getLogger(__name__)

NEW_MODULES = "new modules"
LORA_ADAPTERS = "lora adapters"
# Outermost block index in a parameter's name inside its tower; the second form (timm ResNet's layer1..layer4)
# counts from 1 already.
_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|blocks|stages|block|h)\.(\d+)(?:\.|$)")
_RESNET_STAGE = re.compile(r"(?:^|\.)layer(\d+)(?:\.|$)")
_WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
# peft keeps a fully trained tower twice under FSDP (`original_module` and `modules_to_save.<adapter>`): each copy is
# ordered on its own.
_PEFT_COPY = re.compile(r"^(.*(?:original_module|modules_to_save\.[^.]+)\.)")


def block_index(name: str) -> int | None:
    """The block a tower parameter belongs to, counting from 1 at the input (None outside any block).

    `name` is the parameter's name inside its tower, e.g. `model.encoder.layer.3.output.dense.weight` -> 4,
    `model.timm_model.blocks.0.attn.qkv.weight` -> 1, `model.timm_model.layer2.0.conv1.weight` -> 2.
    """
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    found = [(match.start(), int(match.group(1)) + 1) for match in _BLOCK.finditer(name)]
    found += [(match.start(), int(match.group(1))) for match in _RESNET_STAGE.finditer(name)]
    return min(found)[1] if found else None


def is_lora_parameter(name: str) -> bool:
    """Whether a parameter is a peft LoRA adapter weight (`lora_A`, `lora_B`, `lora_embedding_*`, DoRA's magnitude)."""
    return "lora_" in name


def tower_layers(tower: nn.Module) -> tuple[dict[int, int], int]:
    """({id(parameter): layer}, L) for a tower's own (non-LoRA) parameters: layer 0 before the first block, i for
    block i, L (the deepest block) after the last block."""
    named = [(name, parameter) for name, parameter in tower.named_parameters() if not is_lora_parameter(name)]
    blocks = [block_index(name) for name, _ in named]
    depth = max((block for block in blocks if block is not None), default=0)
    layers: dict[int, int] = {}
    seen_block: set[str] = set()  # the copies (see _PEFT_COPY) whose first block has been met
    for (name, parameter), block in zip(named, blocks):
        copy = match.group(1) if (match := _PEFT_COPY.match(name)) else ""
        if block is not None:
            seen_block.add(copy)
        layers[id(parameter)] = block if block is not None else (depth if copy in seen_block else 0)
    return layers, depth


def parameter_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    decay_names: Iterable[str],
    tower_learning_rate: float | None = None,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups of `model`'s trainable parameters.

    Each group is `{"params", "lr", "weight_decay", "name"}`: "new modules", "lora adapters", "<tower> tower" or,
    with `layer_decay`, "<tower> layer i/L"; each name once with weight decay (parameters in `decay_names`) and once
    without. Groups keep the order in which `model.named_parameters()` first meets them, so the same model gives the
    same layout (which a resumed optimizer state must match).
    """
    check_learning_rates(tower_learning_rate, layer_decay)
    tower_lr = learning_rate if tower_learning_rate is None else tower_learning_rate
    decay = 1.0 if layer_decay is None else layer_decay
    place: dict[int, tuple[str, float]] = {}  # id(parameter) -> (group name, lr)
    for kind, tower in task_model(model).towers().items():
        layers, depth = tower_layers(tower)
        if layer_decay is not None and layer_decay != 1.0 and depth == 0 and layers:
            logger.warning("mmft: --layer_decay: no blocks recognised in the %s tower; all of it at one rate", kind)
        for key, layer in layers.items():
            if layer_decay is None:
                place[key] = (f"{kind} tower", tower_lr)
            else:
                place[key] = (f"{kind} layer {layer}/{depth}", tower_lr * decay ** (depth - layer))
    decay_names = set(decay_names)
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if is_lora_parameter(name):
            group, lr = LORA_ADAPTERS, learning_rate
        else:
            group, lr = place.get(id(parameter), (NEW_MODULES, learning_rate))
        decays = name in decay_names
        entry = groups.setdefault(
            (group, decays), {"params": [], "lr": lr, "weight_decay": weight_decay if decays else 0.0, "name": group}
        )
        entry["params"].append(parameter)
    return list(groups.values())


def check_learning_rates(tower_learning_rate: float | None, layer_decay: float | None) -> None:
    """Refuse a negative tower rate or a decay outside (0, 1]."""
    if tower_learning_rate is not None and tower_learning_rate < 0:
        raise ValueError(f"--tower_learning_rate must be >= 0, got {tower_learning_rate}")
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"--layer_decay must be in (0, 1] (1 = no decay), got {layer_decay}")


def _count(parameter: nn.Parameter) -> int:
    return getattr(parameter, "ds_numel", None) or parameter.numel()  # ZeRO-3 leaves a partitioned stub


def describe_groups(param_groups: Iterable[dict[str, Any]]) -> list[tuple[str, int, float]]:
    """(name, parameters, peak learning rate) per named group of an optimizer, its decay/no-decay halves merged.

    The peak rate is the group's `initial_lr` once an HF scheduler has wrapped the optimizer (its `lr` then follows
    the schedule), else its `lr`. Groups without a name (an optimizer mmft did not group) are left out.
    """
    rows: dict[str, list] = {}
    for group in param_groups:
        if "name" not in group:
            continue
        row = rows.setdefault(group["name"], [0, group.get("initial_lr", group["lr"])])
        row[0] += sum(_count(p) for p in group["params"])
    return [(name, count, lr) for name, (count, lr) in rows.items()]


def log_groups(param_groups: Iterable[dict[str, Any]]) -> None:
    """Log the groups, one line each: name, trainable parameters, learning rate."""
    rows = describe_groups(param_groups)
    width = max((len(name) for name, _, _ in rows), default=0)
    lines = [f"  {name:<{width}}  {count:>12,} parameters  lr {lr:.3g}" for name, count, lr in rows]
    logger.warning("mmft: optimizer parameter groups (peak learning rates):\n%s", "\n".join(lines))


__all__ = [
    "LORA_ADAPTERS",
    "NEW_MODULES",
    "block_index",
    "check_learning_rates",
    "describe_groups",
    "log_groups",
    "parameter_groups",
    "tower_layers",
]
