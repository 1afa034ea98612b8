"""Guards that stop a run early and clearly rather than late or silently: a non-finite loss, an unusable output_dir,
a last batch that several processes pad with repeated rows.

`NonFiniteLossGuard` checks the loss of *every* training forward pass, not just the ones the Trainer logs (it only
averages losses every `logging_steps`, and by default filters NaN/inf out of that average). It does so with a forward
hook on the model, installed at `on_train_begin`: the hook sees the model output, so it raises before `backward()`
and the optimizer step, and no weight is ever touched by a non-finite loss. With several processes the hook shares
every process's loss (one all-reduce of one number per process), so all of them stop at the same step with the same
message; otherwise the others would wait for the stopped one in the next collective until the process-group timeout.
That keeps every checkpoint saved so far good; as a second line of defence it also refuses to let a checkpoint (or
the final model) be saved with non-finite weights, which a finite loss with overflowing gradients could still produce.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile

import torch
import torch.distributed as dist
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/inf loss (or weights); the message says where, why it may be, and how to resume."""


def _resume_hint(output_dir: str) -> str:
    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if last:
        return (
            f"The last checkpoint, {last}, was saved before this and is intact: fix the cause, then resume with "
            f"--resume_from_checkpoint {last}"
        )
    return "No checkpoint had been saved yet (see --save_steps); fix the cause and start again"


_CAUSES = (
    "Usual causes: a learning rate too high (--learning_rate), no gradient clipping (--max_grad_norm), "
    "fp16 overflow (try bf16 or fp32), or inputs with NaN/inf values"
)


def every_process_loss(loss: torch.Tensor) -> list[float]:
    """The training loss of every process, in rank order (one all-reduce), or this process's alone.

    A non-scalar loss counts by its sum, so one NaN/inf element shows.
    """
    value = loss.detach().float().sum()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value.item()]
    values = torch.zeros(dist.get_world_size(), dtype=torch.float32, device=value.device)
    values[dist.get_rank()] = value  # NaN/inf survive the sum with the other processes' zeros
    dist.all_reduce(values)
    return values.tolist()


def _non_finite_parameters(model: nn.Module) -> list[str]:
    return [name for name, parameter in model.named_parameters() if not torch.isfinite(parameter).all()]


class NonFiniteLossGuard(TrainerCallback):
    """Stop training at the first non-finite training loss, before it changes any weight."""

    def __init__(self) -> None:
        self._handle = None
        self._args = None
        self._state = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._args, self._state = args, state
        if model is not None and self._handle is None:
            self._handle = model.register_forward_hook(self._check_loss)

    def _check_loss(self, module: nn.Module, inputs, output) -> None:
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if not module.training or loss is None:
            return
        losses = every_process_loss(loss)
        bad = [rank for rank, value in enumerate(losses) if not math.isfinite(value)]
        if not bad:
            return
        step = self._state.global_step + 1 if self._state else "?"
        where = f" on process{'es' if len(bad) > 1 else ''} {', '.join(map(str, bad))} of {len(losses)}"
        raise NonFiniteLossError(
            f"training loss is {losses[bad[0]]} at step {step}{where if len(losses) > 1 else ''}: stopped before this "
            f"step updated any weight. {_CAUSES}. " + _resume_hint(self._args.output_dir if self._args else ".")
        )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # Runs before the Trainer saves: never write a checkpoint whose weights are already NaN/inf.
        if control.should_save and model is not None:
            self._refuse_bad_weights(model, f"checkpoint at step {state.global_step}", args.output_dir)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if model is not None:
            self._refuse_bad_weights(model, "the final model", args.output_dir)

    @staticmethod
    def _refuse_bad_weights(model: nn.Module, what: str, output_dir: str) -> None:
        bad = _non_finite_parameters(model)
        if bad:
            raise NonFiniteLossError(
                f"{len(bad)} weight tensors are NaN/inf (e.g. {bad[:3]}); {what} was not saved. {_CAUSES}. "
                + _resume_hint(output_dir)
            )


def check_output_dir(path: str) -> None:
    """Fail before training, not after it, when `path` cannot hold the run's outputs (a file, or not writable)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output_dir {path} is a file, not a folder; pick another --output_dir")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".mmft-write-test-"):
            pass
    except OSError as error:
        raise ValueError(
            f"--output_dir {path} is not writable ({type(error).__name__}: {error.strerror or error}); "
            "pick a folder you can write to"
        ) from None


def padded_batches_warning(rows: int, args) -> str | None:
    """What several processes do to a last batch they cannot fill, or None when nothing is padded.

    accelerate (`even_batches`) gives every process a full batch: the last one of an epoch is filled up with rows
    from the start of the epoch, which then count twice in that step. One process instead takes a smaller last batch,
    so the runs differ there. `--dataloader_drop_last` drops the partial batch in both, and they agree again.
    """
    world, batch = args.world_size, args.per_device_train_batch_size
    padded = -rows % (world * batch)
    if world <= 1 or args.dataloader_drop_last or not padded:
        return None
    return (
        f"mmft: {rows} training rows do not fill whole batches of {world} processes x {batch}: the last batch of "
        f"each epoch is filled up with {padded} repeated rows (accelerate's even_batches), which count twice in that "
        "step, so this run differs from one process with the same global batch. For the same run on any number of "
        f"processes, pass --dataloader_drop_last true or use a multiple of {world * batch} rows"
    )
