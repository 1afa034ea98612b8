"""Small pieces for tests/test_multitask_sampling.py: row-id datasets, a gloo worker, a tiny two-head model.

The datasets are real (`datasets.Dataset` for one task, a plain list for the other, so both read paths run) and
each example carries its row id, so a batch says exactly which rows it holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from datasets import Dataset
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from mmft.multitask import MultiTaskStream, TaskSampler

SIZES = {"vqa": 23, "captioning": 9, "retrieval": 5}  # small, so every task wraps through several epochs
FEATURES = 4


def row_datasets(sizes: dict[str, int] = SIZES) -> dict[str, object]:
    """Per task: rows {"row": i, "x": FEATURES floats of i, "y": a target}; the first task as a `datasets.Dataset`."""
    out = {}
    for number, (task, size) in enumerate(sizes.items()):
        rows = [
            {"row": i, "x": [float((i * (j + 3)) % 7) for j in range(FEATURES)], "y": float(i % 3)} for i in range(size)
        ]
        out[task] = Dataset.from_list(rows) if number == 0 else rows
    return out


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "row_ids": torch.tensor([e["row"] for e in examples]),
        "x": torch.tensor([e["x"] for e in examples]),
        "labels": torch.tensor([e["y"] for e in examples]),
    }


def make_stream(
    batch: int,
    *,
    strategy: str = "proportional",
    accumulation: int = 1,
    mix: bool = False,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    sizes: dict[str, int] = SIZES,
    **sampler_kwargs,
) -> MultiTaskStream:
    data = row_datasets(sizes)
    sampler = TaskSampler({t: len(d) for t, d in data.items()}, strategy, seed=seed, **sampler_kwargs)
    return MultiTaskStream(
        data,
        dict.fromkeys(data, collate),
        sampler,
        batch,
        gradient_accumulation_steps=accumulation,
        mix_within_step=mix,
        seed=seed,
        process_index=rank,
        num_processes=world,
    )


def take(stream: MultiTaskStream, count: int) -> list[tuple[str, list[int]]]:
    """The next `count` micro-batches of `stream` as (task, row ids), read through its real iterator."""
    iterator = iter(stream)
    return [(b["task"], b["row_ids"].tolist()) for b in (next(iterator) for _ in range(count))]


def gloo_worker(rank: int, world: int, port: int, out: str, batch: int, count: int, accumulation: int) -> None:
    """One of `world` gloo processes: read `count` micro-batches of its share; rank 0 writes everyone's to `out`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        stream = make_stream(batch, accumulation=accumulation, rank=dist.get_rank(), world=dist.get_world_size())
        mine = take(stream, count)
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
        if rank == 0:
            Path(out).write_text(json.dumps(everyone))
    finally:
        dist.destroy_process_group()


class TinyMultiTaskConfig(PretrainedConfig):
    model_type = "tiny_multitask_test"

    def __init__(self, tasks: list[str] | None = None, features: int = FEATURES, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tasks, self.features = tasks or list(SIZES), features


class TinyMultiTaskModel(PreTrainedModel):
    """A shared linear layer and one head per task; `forward(task=..., **batch)` as the multi-task model's.

    Records the (task, row ids) of every training batch it sees in `seen`.
    """

    config_class = TinyMultiTaskConfig

    def __init__(self, config: TinyMultiTaskConfig) -> None:
        super().__init__(config)
        self.shared = nn.Linear(config.features, 8)
        self.heads = nn.ModuleDict({t: nn.Linear(8, 1) for t in config.tasks})
        self.seen: list[tuple[str, list[int]]] = []
        self.post_init()

    def _init_weights(self, module) -> None:
        if isinstance(module, nn.Linear):
            generator = torch.Generator().manual_seed(module.in_features * 31 + module.out_features)
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.3)
                module.bias.zero_()

    def forward(self, task: str, x: torch.Tensor, labels: torch.Tensor, row_ids: torch.Tensor) -> dict:
        if self.training:
            self.seen.append((task, row_ids.tolist()))
        prediction = self.heads[task](torch.tanh(self.shared(x))).squeeze(-1)  # (B,)
        return {"loss": nn.functional.mse_loss(prediction, labels), "logits": prediction}
