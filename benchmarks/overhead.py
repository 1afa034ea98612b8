"""Benchmark 1: what the recipe's Trainer path costs over a minimal hand-written PyTorch loop, step for step.

Both train the same model (the default preset's, deep-copied) on the same batches in the same order, with the
same collator, precision and fused AdamW. They alternate step by step inside one process: after every Trainer step a
callback runs one hand-written step, so machine noise lands on both alike. Like with like: the hand loop also clips
gradients to `max_grad_norm` and steps the same LR schedule (the recipe does both); the clipping time is measured
separately so the ratio against a loop without clipping is shown too.

    python benchmarks/overhead.py [--steps 40] [--device cuda]     # last line: overhead_ratio=X
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch
from harness import autocast_for, median, synchronize, to_device
from recipe_parts import recipe_argv, run_recipe
from torch.utils.data import DataLoader
from transformers import TrainerCallback, get_scheduler


def _forever(loader: DataLoader):
    while True:
        yield from loader


class InterleavedHandLoop(TrainerCallback):
    """
    After each Trainer step, runs and times one hand-written step.

    Trainer step i is the time from this callback returning at step i-1 to its call at step i: the Trainer's batch
    fetch, forward, backward, clipping, optimizer and scheduler steps, and its logging between steps.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.trainer_times: list[float] = []
        self.hand_times: list[float] = []
        self.clip_times: list[float] = []
        self._returned_at: float | None = None

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, optimizer=None, **kwargs):
        self.model = copy.deepcopy(model).train()
        # The Trainer's dataset (with its transform), collator and worker count; a copy of its batch sampler taken
        # before the Trainer draws from it, so the hand loop trains on the very same batches in the same order.
        self.batches = _forever(
            DataLoader(
                train_dataloader.dataset,
                batch_sampler=copy.deepcopy(train_dataloader.batch_sampler),
                collate_fn=train_dataloader.collate_fn,
                num_workers=args.dataloader_num_workers,
            )
        )
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        fused = bool(optimizer.defaults.get("fused"))  # the kernel the Trainer picked (default: fused AdamW)
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=args.learning_rate, weight_decay=args.weight_decay, fused=fused
        )
        self.scheduler = get_scheduler(
            args.lr_scheduler_type, self.optimizer, args.get_warmup_steps(state.max_steps), state.max_steps
        )
        self.max_grad_norm = args.max_grad_norm
        self.running_loss = torch.zeros((), device=self.device)

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def _hand_step(self) -> None:
        batch = to_device(next(self.batches), self.device)
        with autocast_for(self.device):
            loss = self.model(**batch).loss
        loss.backward()
        if self.max_grad_norm > 0:
            start = self._now()
            torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
            self.clip_times.append(self._now() - start)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.running_loss += loss.detach()  # kept on the device, like the Trainer's running loss

    def on_step_end(self, args, state, control, **kwargs):
        called_at = self._now()
        if self._returned_at is not None:
            self.trainer_times.append(called_at - self._returned_at)
        self._hand_step()
        self.hand_times.append(self._now() - called_at)
        self._returned_at = self._now()


def run(steps: int = 40, warmup: int = 5, device: str = "cpu", quick: bool = False) -> dict:
    """Median Trainer step / median hand-written step, on the default preset, interleaved step by step."""
    loop = InterleavedHandLoop(device)
    with tempfile.TemporaryDirectory() as output_dir:
        run_recipe(recipe_argv(output_dir, steps + warmup + 1, device, quick), [loop])
    trainer, hand = loop.trainer_times[warmup:], loop.hand_times[warmup + 1 :]  # hand step 0 precedes interval 0
    clip = loop.clip_times[warmup + 1 :]
    hand_unclipped = [h - c for h, c in zip(hand, clip)] if clip else hand
    return {
        "steps": len(trainer),
        "trainer_step_s": median(trainer),
        "hand_step_s": median(hand),
        "clip_s": median(clip) if clip else 0.0,
        "overhead_ratio": median(trainer) / median(hand),
        "overhead_ratio_mean": (sum(trainer) / len(trainer)) / (sum(hand) / len(hand)),
        "overhead_ratio_vs_unclipped_loop": median(trainer) / median(hand_unclipped),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    result = run(options.steps, options.warmup, options.device, options.quick)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"overhead_ratio={result['overhead_ratio']:.3f}")


if __name__ == "__main__":
    main()
