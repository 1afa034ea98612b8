"""`MMFTTrainer`: the HF `Trainer`, resuming exactly or refusing to.

Three things the HF Trainer (5.24) does not do on resume:

* **Weights through the key conversion.** transformers renames some towers' weights between the names a checkpoint
  holds and the live module names (an HF ViT's `encoder.layer.0.attention.attention.query` is
  `layers.0.attention.q_proj` in memory; DINOv2 likewise). `save_pretrained` writes the original names and
  `from_pretrained` converts them back, but the Trainer's resume (and `load_best_model_at_end`) loads the file with a
  plain, non-strict `load_state_dict`: every renamed weight kept its fresh value, with only a log line. Here a full
  checkpoint is read with `from_pretrained` (the same conversion) and copied into the live model; a LoRA checkpoint's
  adapter file must hold exactly the keys peft would save now. Any missing or unexpected key is an error.
* **Which RNG states were restored.** Resuming with another number of processes than wrote the checkpoint leaves
  some processes without their RNG state; this is said, naming them.
* **Whose checkpoint it is.** Every checkpoint gets the run fingerprint (`mmft.fingerprint`) before the Trainer
  writes its own files, so a complete checkpoint always carries it.

Every file of a checkpoint gets the ordinary file mode (`mmft.file_modes`): safetensors writes weights as 0600.

Also: `--dataloader_drop_last` drops partial *training* batches only; evaluation always sees every row. With
`tower_learning_rate` or `layer_decay` the optimizer gets one parameter group per part (`mmft.param_groups`), logged
once when it is built; without them it is the Trainer's own (one rate, two weight-decay groups). And a task
that scores with its own evaluation (retrieval's ranking, captioning's generation) passes it as `evaluator`: each
evaluation during training then reports its metrics beside the loss, so `metric_for_best_model` can name them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import Trainer
from transformers.trainer_optimizer import is_optimizer_factory
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, is_sagemaker_mp_enabled

from .checkpoints import rng_files, saved_world_size
from .file_modes import give_ordinary_modes
from .fingerprint import write_run_file
from .param_groups import check_learning_rates, log_groups, parameter_groups

logger = logging.getLogger(__name__)
SHOWN_KEYS = 10
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not cover the model exactly (missing, unexpected or misshapen keys)."""


def _key_problems(what: str, missing, unexpected, mismatched=()) -> list[str]:
    problems = []
    for name, keys in (
        ("missing", sorted(missing)),
        ("unexpected", sorted(unexpected)),
        ("of another shape", sorted(str(k) for k in mismatched)),
    ):
        if keys:
            more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
            problems.append(f"{len(keys)} {name} key(s) in {what}: {keys[:SHOWN_KEYS]}{more}")
    return problems


def _refuse(checkpoint: str, problems: list[str]) -> None:
    if problems:
        raise CheckpointMismatchError(
            f"{checkpoint} cannot be resumed from: its weights do not match the model ({'; '.join(problems)}). "
            "Was it written by another model or another version of mmft? Resume the checkpoint of this run, or start "
            "afresh in another --output_dir"
        )


def load_full_checkpoint(model, checkpoint: str) -> None:
    """Copy a full checkpoint's weights into `model` through `from_pretrained`'s key conversion, strictly.

    Reads the folder into a second copy of the model on the CPU (that is what converts the names), then copies every
    tensor in place, so the live parameters keep their device, dtype and `requires_grad`.
    """
    loaded, info = type(model).from_pretrained(checkpoint, output_loading_info=True, use_safetensors=True)
    problems = _key_problems(
        "the checkpoint", info["missing_keys"], info["unexpected_keys"], info.get("mismatched_keys", ())
    )
    _refuse(checkpoint, problems)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    _refuse(checkpoint, _key_problems("the model", result.missing_keys, result.unexpected_keys))


def check_adapter_checkpoint(model, checkpoint: str) -> None:
    """A LoRA checkpoint's adapter file must hold exactly the tensors peft saves for this model now."""
    from peft import get_peft_model_state_dict

    path = os.path.join(checkpoint, ADAPTER_WEIGHTS)
    if not os.path.isfile(path):
        return  # the Trainer reports a checkpoint without weights itself
    with safe_open(path, framework="pt") as handle:
        saved = set(handle.keys())
    expected = set(get_peft_model_state_dict(model).keys())
    _refuse(checkpoint, _key_problems(ADAPTER_WEIGHTS, expected - saved, saved - expected))


def _is_full_checkpoint(checkpoint: str) -> bool:
    return any(os.path.isfile(os.path.join(checkpoint, name)) for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME))


class MMFTTrainer(Trainer):
    """The HF `Trainer` with strict, key-converting resumes and the run fingerprint in every checkpoint.

    `fingerprint`: this run's `mmft.fingerprint.run_fingerprint`, written into each checkpoint (None: none written).
    `tower_learning_rate` / `layer_decay`: the towers' own learning rate (None: `args.learning_rate`) and its decay
    per layer down each tower (None: none); see `mmft.param_groups`.
    `evaluator`: `(trainer, metric_key_prefix) -> metrics` of `eval_dataset`, called by `evaluate()` on every
    process after the loss pass (None: the Trainer's `compute_metrics` alone).

    A model output's scalar `*_loss` fields besides `loss` (retrieval's contrastive and matching losses, a
    decoder's `prefix_answer_loss`) are logged in training as `loss/<field>`, their mean since the last log over
    every process, beside the Trainer's `loss`.
    """

    def __init__(
        self,
        *args: Any,
        fingerprint: dict[str, Any] | None = None,
        tower_learning_rate: float | None = None,
        layer_decay: float | None = None,
        evaluator: Callable[[Trainer, str], dict[str, float]] | None = None,
        **kwargs: Any,
    ) -> None:
        check_learning_rates(tower_learning_rate, layer_decay)
        super().__init__(*args, **kwargs)
        self.fingerprint = fingerprint
        self.tower_learning_rate, self.layer_decay = tower_learning_rate, layer_decay
        self.evaluator = evaluator
        self._loss_parts: dict[str, list[torch.Tensor]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and isinstance(outputs, Mapping):
            for key, value in outputs.items():  # a model's own loss parts; the fields are fixed by its config
                if key != "loss" and key.endswith("_loss") and torch.is_tensor(value) and value.dim() == 0:
                    self._loss_parts.setdefault(key, []).append(value.detach().float())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._loss_parts:  # a training log; every process calls it and holds the same names
            local = {name: torch.stack(values).mean() for name, values in self._loss_parts.items()}
            logs.update({f"loss/{name}": mean for name, mean in self.mean_over_processes(local).items()})
            self._loss_parts = {}
        super().log(logs, *args, **kwargs)

    def mean_over_processes(self, local_means: dict[str, Any]) -> dict[str, float]:
        """Each name's mean over every process, from this process's means (floats or 0-d tensors). Every process
        must call it, with the same names."""
        names = sorted(local_means)
        if not names:
            return {}
        local = torch.tensor([float(local_means[name]) for name in names], device=self.args.device)
        return dict(zip(names, self.accelerator.reduce(local, reduction="mean").tolist()))

    def create_optimizer(self, model=None):
        """The Trainer's optimizer; with a tower learning rate or layer decay, over `mmft.param_groups` groups.

        The groups reach the Trainer as the `params` of its optimizer kwargs (the hook GaLore uses), so the optimizer
        class, its arguments, bitsandbytes' 8-bit handling and DeepSpeed/FSDP preparation stay the Trainer's.
        """
        if self.optimizer is not None or (self.tower_learning_rate is None and self.layer_decay is None):
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        given = self.optimizer_cls_and_kwargs  # the Trainer's `optimizer_cls_and_kwargs` argument, if any
        optimizer_cls, optimizer_kwargs = given or self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        if is_optimizer_factory(optimizer_cls) or {"params", "model", "optimizer_dict"} & optimizer_kwargs.keys():
            raise ValueError(
                f"--tower_learning_rate / --layer_decay need an optimizer over parameter groups; --optim "
                f"{self.args.optim} builds its own. Choose another --optim (adamw_torch, ...) or drop those flags"
            )
        groups = parameter_groups(
            opt_model,
            self.args.learning_rate,
            self.args.weight_decay,
            self.get_decay_parameter_names(opt_model),
            self.tower_learning_rate,
            self.layer_decay,
        )
        self.optimizer_cls_and_kwargs = (optimizer_cls, {**optimizer_kwargs, "params": groups})
        try:
            optimizer = super().create_optimizer(model)
        finally:
            self.optimizer_cls_and_kwargs = given
        if self.args.process_index == 0:
            log_groups(optimizer.param_groups)
        return optimizer

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if self.evaluator is None or eval_dataset is not None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        self._memory_tracker.start()
        start = time.time()
        output = self.evaluation_loop(
            self.get_eval_dataloader(),
            description="Evaluation",
            prediction_loss_only=True,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        metrics = {**output.metrics, **self.evaluator(self, metric_key_prefix)}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics

    def _plain_load(self) -> bool:
        """Whether the weights are loaded by `load_state_dict` (not by DeepSpeed, FSDP or SageMaker's own loaders)."""
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled or is_sagemaker_mp_enabled())

    def _load_weights(self, checkpoint: str, model) -> bool:
        """Load `checkpoint` into `model` the strict way when mmft can; False to leave it to the Trainer."""
        if not self._plain_load():
            return False
        if hasattr(model, "peft_config"):
            check_adapter_checkpoint(model, checkpoint)
            return False  # peft's load_adapter maps the (live-named) adapter keys itself
        if _is_full_checkpoint(checkpoint):
            load_full_checkpoint(model, checkpoint)
            return True
        return False

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not self._load_weights(resume_from_checkpoint, model if model is not None else self.model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best and self._load_weights(best, self.model):
            logger.info("loaded the best model from %s (score: %s)", best, self.state.best_metric)
            return
        super()._load_best_model()

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)
        if checkpoint is None:
            return
        world, written = self.args.world_size, saved_world_size(checkpoint)
        expected = rng_files(world)
        lost = [rank for rank, name in enumerate(expected) if not os.path.isfile(os.path.join(checkpoint, name))]
        if lost and self.args.process_index == 0:
            logger.warning(
                "mmft: %s was written by %s process(es) and this run has %d: RNG state not restored for process %s of "
                "%d (no %s for it); those processes go on from --seed, so their random draws (dropout, sampling) "
                "differ from an uninterrupted run. Data order and weights continue from the checkpoint",
                checkpoint,
                written or "an unknown number of",
                world,
                ", ".join(map(str, lost)),
                world,
                " / ".join(expected[rank] for rank in lost[:3]),
            )

    def _get_dataloader(self, *args: Any, is_training: bool = False, **kwargs: Any):
        # `--dataloader_drop_last` is for training batches (docs/distributed.md); the Trainer applies it to evaluation
        # too, which would leave rows unscored, or, with fewer rows than one batch per process, none at all.
        if is_training or not self.args.dataloader_drop_last:
            return super()._get_dataloader(*args, is_training=is_training, **kwargs)
        self.args.dataloader_drop_last = False
        try:
            return super()._get_dataloader(*args, is_training=is_training, **kwargs)
        finally:
            self.args.dataloader_drop_last = True

    def _save_checkpoint(self, model, trial) -> None:
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.fingerprint is not None and self.args.should_save:
            write_run_file(folder, self.fingerprint, self.args.world_size)
        super()._save_checkpoint(model, trial)
        if self.args.should_save and folder.is_dir():  # weights, optimizer and RNG states: readable like any file
            give_ordinary_modes(folder)


__all__ = ["CheckpointMismatchError", "MMFTTrainer", "check_adapter_checkpoint", "load_full_checkpoint"]
