"""One FSDP2 worker (run under `torchrun`, gloo on the CPU): shard an mmft model the way accelerate's fsdp.yaml does.

accelerate 1.15 only enables FSDP for GPU-like process groups (a CPU launch becomes plain DDP), so this script
drives the same pieces directly: accelerate's transformer-based auto-wrap policy read from the model's
`_no_split_modules`, `fully_shard` on every matched unit and then the root. Two comparisons, written to `--out` as
JSON for tests/test_fsdp.py:

* `sgd`: SGD with momentum, eval mode (no dropout), each rank on its half of every batch, against one unsharded copy
  trained by rank 0 on the whole batch (the same arithmetic as one process);
* `adamw_dropout`: AdamW with dropout on (train mode: bridge, LoRA and BERT dropout 0.1) against DDP on the same
  halves with the same per-rank seeds, so both draw the same dropout masks (DDP itself matches one process:
  tests/test_distributed.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy, get_module_children_bottom_up
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ANSWERS, IMAGE_SIZE, tiny_model  # noqa: E402

from mmft.lora import LoraPlan  # noqa: E402

PLANS = {"lora": LoraPlan(vision="lora", text="lora", r=4, dropout=0.0), "full": LoraPlan(vision="full", text="full")}
DROPOUT = 0.1


def batches(steps: int, size: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "pixel_values": torch.randn(size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
            "input_ids": torch.randint(1000, 2000, (size, 9), generator=generator),
            "attention_mask": torch.ones(size, 9, dtype=torch.long),
            "labels": torch.randint(0, len(ANSWERS), (size,), generator=generator),
        }
        for _ in range(steps)
    ]


def train(model: torch.nn.Module, steps: list[dict[str, torch.Tensor]], adamw: bool = False) -> list[float]:
    # SGD for the comparison with one process: it is of gradients (sharded reduce-scatter vs one full batch), and
    # Adam's m / sqrt(v) turns 1e-7 rounding differences in near-zero gradients into lr-sized weight differences.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3) if adamw else torch.optim.SGD(trainable, lr=0.05, momentum=0.9)
    losses = []
    for batch in steps:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--cases",
        required=True,
        help="comma-separated plans, each optionally with ':skew' (negative control: rank 1 sees "
        "other labels); one process group runs them all",
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    os.environ["ACCELERATE_USE_FSDP"] = "true"  # what `accelerate launch` sets for fsdp.yaml; LoraPlan reads it
    results = {}
    for case in args.cases.split(","):
        plan, _, variant = case.partition(":")
        if plan not in PLANS or variant not in ("", "skew"):
            raise SystemExit(f"unknown case {case!r}: a plan of {sorted(PLANS)}, optionally ':skew'")
        results[case] = run_case(plan, variant == "skew", args.steps, args.batch)
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


def run_case(plan_name: str, skew_rank1_data: bool, steps: int, batch: int) -> dict:
    """One plan, sharded against its references (rank 0's result holds the comparisons)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    data = batches(steps, batch)
    share = batch // world
    local = [{k: v[rank * share : (rank + 1) * share] for k, v in b.items()} for b in data]
    skewed = (
        [{**b, "labels": (b["labels"] + 1) % len(ANSWERS)} for b in local] if skew_rank1_data and rank == 1 else local
    )

    # SGD, eval mode: sharded vs one unsharded process on the whole batch
    model = PLANS[plan_name].apply(tiny_model("co_attention", "timm_vit")).eval()  # eval: no dropout masks to match
    reference = copy.deepcopy(model)
    units = shard(model)
    loss_means = mean_losses(train(model, skewed), world)
    sharded = full_parameters(model)
    local_fraction = sum(p.to_local().numel() for p in model.parameters()) / sum(p.numel() for p in model.parameters())
    result = {
        "world": world,
        "units": sorted(set(units)),
        "unit_count": len(units),
        "local_parameter_fraction": local_fraction,
        "losses": loss_means,
    }
    if rank == 0:
        result["reference_losses"] = [loss.item() for loss in train(reference, data)]
        result["max_weight_diff"] = max_diff(sharded, reference)

    # AdamW, dropout on: sharded vs DDP, each process on its half with the same seed in both runs
    plan = replace(PLANS[plan_name], dropout=DROPOUT)
    model = plan.apply(tiny_model("co_attention", "timm_vit", hidden_dropout=DROPOUT)).train()
    reference = DistributedDataParallel(copy.deepcopy(model))
    shard(model)
    torch.manual_seed(100 + rank)
    sharded_losses = mean_losses(train(model, skewed, adamw=True), world)
    torch.manual_seed(100 + rank)
    ddp_losses = mean_losses(train(reference, local, adamw=True), world)
    sharded = full_parameters(model)
    result["adamw_dropout"] = {
        "losses": sharded_losses,
        "reference_losses": ddp_losses,
        "max_weight_diff": max_diff(sharded, reference.module),
    }
    return result


def shard(model: torch.nn.Module) -> list[str]:
    """`fully_shard` every auto-wrap unit (accelerate's policy from `_no_split_modules`), then the root; returns the
    units' class names (read before `fully_shard` renames the classes, e.g. to FSDPBertLayer)."""
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    policy = fsdp2_prepare_auto_wrap_policy(
        plugin, model.get_base_model() if hasattr(model, "get_base_model") else model
    )
    units = [m for m in get_module_children_bottom_up(model)[:-1] if policy(m)]
    names = [type(unit).__name__ for unit in units]
    for unit in units:
        fully_shard(unit)
    fully_shard(model)
    return names


def mean_losses(losses: list[torch.Tensor], world: int) -> list[float]:
    """The global-batch losses: the mean of the equal-sized halves' losses."""
    for loss in losses:
        dist.all_reduce(loss)
    return [loss.item() / world for loss in losses]


def full_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.full_tensor() if isinstance(p, DTensor) else p for name, p in model.named_parameters()}


def max_diff(sharded: dict[str, torch.Tensor], reference: torch.nn.Module) -> float:
    return max((sharded[name].detach() - p.detach()).abs().max().item() for name, p in reference.named_parameters())


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
