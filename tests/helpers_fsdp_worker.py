"""One FSDP2 worker (run under `torchrun`, gloo on the CPU): shard an mmft model the way accelerate's fsdp.yaml does.

accelerate 1.15 only enables FSDP for GPU-like process groups (a CPU launch becomes plain DDP), so this script
drives the same pieces directly: accelerate's transformer-based auto-wrap policy read from the model's
`_no_split_modules`, `fully_shard` on every matched unit and then the root, SGD with momentum on the sharded parameters. Each
rank trains on its half of every batch; rank 0 also trains an unsharded copy on the whole batch and writes both
results to `--out` as JSON for tests/test_fsdp.py to compare.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy, get_module_children_bottom_up
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ANSWERS, IMAGE_SIZE, tiny_model  # noqa: E402

from mmft.lora import LoraPlan  # noqa: E402

PLANS = {"lora": LoraPlan(vision="lora", text="lora", r=4, dropout=0.0), "full": LoraPlan(vision="full", text="full")}


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


def train(model: torch.nn.Module, steps: list[dict[str, torch.Tensor]]) -> list[float]:
    # SGD, not AdamW: the comparison is of gradients (sharded reduce-scatter vs one full batch), and Adam's
    # m / sqrt(v) turns 1e-7 rounding differences in near-zero gradients into lr-sized weight differences.
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
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
    parser.add_argument("--plan", choices=PLANS, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--skew_rank1_data", action="store_true", help="negative control: rank 1 sees other data")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    os.environ["ACCELERATE_USE_FSDP"] = "true"  # what `accelerate launch` sets for fsdp.yaml; LoraPlan reads it

    model = PLANS[args.plan].apply(tiny_model("co_attention", "timm_vit")).eval()  # eval: no dropout masks to match
    reference = copy.deepcopy(model)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model.get_base_model() if hasattr(model, "get_base_model") else model)
    units = [m for m in get_module_children_bottom_up(model)[:-1] if policy(m)]
    unit_names = sorted({type(u).__name__ for u in units})  # fully_shard renames the classes (FSDPBertLayer)
    for unit in units:
        fully_shard(unit)
    fully_shard(model)

    data = batches(args.steps, args.batch)
    share = args.batch // world
    local = [{k: v[rank * share : (rank + 1) * share] for k, v in b.items()} for b in data]
    if args.skew_rank1_data and rank == 1:
        local = [{**b, "labels": (b["labels"] + 1) % len(ANSWERS)} for b in local]
    sharded_losses = train(model, local)
    loss_means = []
    for loss in sharded_losses:  # the global-batch loss is the mean of the equal-sized halves' losses
        dist.all_reduce(loss)
        loss_means.append(loss.item() / world)
    sharded_params = {name: p.full_tensor() if isinstance(p, DTensor) else p for name, p in model.named_parameters()}
    local_fraction = sum(p.to_local().numel() for p in model.parameters()) / sum(p.numel() for p in model.parameters())

    if rank == 0:
        reference_losses = [loss.item() for loss in train(reference, data)]
        max_diff = max(
            (sharded_params[name].detach() - p.detach()).abs().max().item() for name, p in reference.named_parameters()
        )
        Path(args.out).write_text(json.dumps({
            "world": world, "units": unit_names, "unit_count": len(units),
            "local_parameter_fraction": local_fraction, "losses": loss_means, "reference_losses": reference_losses,
            "max_weight_diff": max_diff,
        }))  # fmt: skip
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
