"""Guards that stop a run early and clearly rather than late or silently: a non-finite loss, an unusable output_dir.

`NonFiniteLossGuard` checks the loss of *every* training forward pass, not just the ones the Trainer logs (it only
averages losses every `logging_steps`, and by default filters NaN/inf out of that average). It does so with a forward
hook on the model, installed at `on_train_begin`: the hook sees the model output, so it raises before `backward()`
and the optimizer step, and no weight is ever touched by a non-finite loss. That keeps every checkpoint saved so far
good; as a second line of defence it also refuses to let a checkpoint (or the final model) be saved with non-finite
weights, which a finite loss with overflowing gradients could still produce.
"""

from __future__ import annotations

import os
import tempfile

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint


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
        if not module.training or loss is None or bool(torch.isfinite(loss.detach()).all()):
            return
        step = self._state.global_step + 1 if self._state else "?"
        value = loss.detach().float().reshape(-1)[0].item()
        raise NonFiniteLossError(
            f"training loss is {value} at step {step}: stopped before this step updated any weight. {_CAUSES}. "
            + _resume_hint(self._args.output_dir if self._args else ".")
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
