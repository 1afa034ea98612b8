"""Trainer callbacks: throughput and MFU in the training logs, PNG plots of the run, and a Hub model card.

Each is a plain `transformers.TrainerCallback`, usable in any Trainer: `Trainer(..., callbacks=[ThroughputCallback()])`.
The Trainer runs user callbacks after its reporting integrations (wandb, tensorboard, ...), so figures a callback
adds to the logs reach only the console and `state.log_history`, unless `log_before_reporters(trainer)` moves it
ahead of them (the recipe does).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from . import flops as flops_lib
from .unwrap import task_model

logger = logging.getLogger(__name__)

# Dense peak FLOP/s per GPU (vendor datasheets, no sparsity), by substring of `torch.cuda.get_device_name()`;
# the first match wins, so the more specific names come first.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51.2e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},  # SXM
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
    "RTX 4090": {"bf16": 165.2e12, "fp16": 165.2e12, "tf32": 82.6e12, "fp32": 82.6e12},
}
_CPU_PEAK: float | None = None


def measure_cpu_peak_flops(size: int = 1024, seconds: float = 0.3) -> float:
    """Best fp32 matmul FLOP/s of this CPU with the current torch thread count; measured once per process."""
    global _CPU_PEAK
    if _CPU_PEAK is None:
        # Its own generator: drawing from the global one would shift the dropout masks of the run being measured,
        # and only of the first run in a process, since the figure is cached.
        generator = torch.Generator().manual_seed(0)
        a, b = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
        a @ b  # warm-up: thread pool start, allocation
        best, deadline = math.inf, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        _CPU_PEAK = 2.0 * size**3 / best
    return _CPU_PEAK


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s of one `device` at `precision` (bf16 / fp16 / tf32 / fp32); None for an unknown accelerator."""
    if device.type == "cpu":
        return measure_cpu_peak_flops()
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, table in PEAK_FLOPS.items():
        if key in name:
            return table.get(precision)
    return None


def training_precision(args: TrainingArguments) -> str:
    if args.bf16:
        return "bf16"
    if args.fp16:
        return "fp16"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


class ThroughputCallback(TrainerCallback):
    """
    Adds to every training log: `perf/samples_per_second`, `perf/tokens_per_second` (image + text tokens as the
    model computes them, padding included; and caption tokens for captioning), `perf/step_seconds`,
    `perf/flops_per_step` (analytic, `mmft.flops`), `perf/tflops` and `perf/mfu` (against `PEAK_FLOPS`, or a matmul
    probe on CPU; `peak_flops=` overrides).

    Figures cover the steps since the previous log, summed over processes (world size x one process's count), and
    time each step from the end of the previous one, so data loading counts; evaluation and saving do not.

    A multi-task model (one whose forward takes `task=`, `mmft.multitask`) also gets `perf/<task>/samples_per_second`
    and `perf/<task>/step_seconds` for each task trained in the window, from that task's steps alone (a step that
    mixes tasks, `--mix_within_step`, shares its time among its micro-batches' tasks).
    """

    def __init__(self, peak_flops: float | None = None) -> None:
        self.peak = peak_flops
        self._hooks: list = []  # the hooks that report a batch's shapes (`_count` waits for all of them)
        self._task_hook = None
        self._pending: dict[str, tuple] = {}
        self._flops_cache: dict[tuple, float] = {}
        self._reset_window()
        self._last_end: float | None = None

    def _reset_window(self) -> None:
        self.samples = self.tokens = self.flops = 0.0
        self.seconds, self.steps = 0.0, 0
        self.by_task: dict[str, list[float]] = {}  # task -> [samples, seconds, steps] in the window
        self._step_tasks: list[str] = []  # the task of each micro-batch of the current step

    # A multi-task model's forward names its task (`forward(task=..., **batch)`): each training micro-batch's task,
    # for the per-task figures. A single-task model's forward takes no `task`, and nothing is recorded.
    def _task_begins(self, module, args, kwargs) -> None:
        if self._core.training and kwargs.get("task") is not None:
            self._step_tasks.append(kwargs["task"])

    # -- counting what the model computes ------------------------------------------------------------------------
    # Hooks on parts every mmft model runs once per training batch, whatever its head does with the bridge: the
    # vision tower (batch, image tokens, pixel shape) and the text projection (text tokens, also when a frozen text
    # tower is served from its cache); a captioning model's decoder too, whose input holds the prefix and the batch's
    # caption positions (B, P + T, Dd). A batch is counted when every hooked part has reported its shapes.
    def _vision(self, module, args, output) -> None:
        if self._core.training:  # evaluation forwards are not training throughput
            self._pending["image"] = (output.tokens.shape[0], output.tokens.shape[1], tuple(args[0].shape[1:]))
            self._count()

    def _text(self, module, args, output) -> None:
        if self._core.training:
            self._pending["text"] = (args[0].shape[1],)  # (B, Nt, Dt) into the projection
            self._count()

    def _decoder(self, module, args, output) -> None:
        if self._core.training:
            self._pending["caption"] = (args[0].shape[1],)  # (B, P + T, Dd): the prefix and the caption positions
            self._count()

    def _count(self) -> None:
        if len(self._pending) < len(self._hooks):
            return
        (batch, image_tokens, pixel_shape), (text_tokens,) = self._pending.pop("image"), self._pending.pop("text")
        (decoder_positions,) = self._pending.pop("caption", (0,))
        # The caption positions from the decoder's input, not its logits: training skips the output layer on prompts
        caption_tokens = decoder_positions - self._task.caption_prefix_length(image_tokens) if decoder_positions else 0
        key = (image_tokens, text_tokens, pixel_shape, caption_tokens)
        if key not in self._flops_cache:
            forward = flops_lib.forward_flops(self._model, image_tokens, text_tokens, pixel_shape, caption_tokens)
            cached = self._core._text_cache is not None
            self._flops_cache[key] = flops_lib.training_flops(self._model, forward, text_cached=cached)
        self.samples += batch
        if self._step_tasks:
            self.by_task.setdefault(self._step_tasks[-1], [0.0, 0.0, 0.0])[0] += batch
        self.tokens += batch * (image_tokens + text_tokens + caption_tokens)  # + caption tokens when captioning
        self.flops += batch * self._flops_cache[key]

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        if self._task_hook is not None:
            self._task_hook.remove()
            self._task_hook = None
        self._hooks, self._pending = [], {}

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs: Any
    ) -> None:
        self._model, self._task = model, task_model(model)
        self._core = self._task.core
        self._remove_hooks()
        self._hooks = [
            self._core.vision_tower.register_forward_hook(self._vision),
            self._core.text_projection.register_forward_hook(self._text),
        ]
        self._task_hook = self._task.register_forward_pre_hook(self._task_begins, with_kwargs=True)
        if (decoder := self._task.towers().get("decoder")) is not None:
            self._hooks.append(decoder.register_forward_hook(self._decoder))
        if self.peak is None:
            self.peak = peak_flops(args.device, training_precision(args))
            if self.peak is None:
                logger.warning("ThroughputCallback: no peak FLOP/s known for %s; pass peak_flops= for MFU", args.device)
        self._reset_window()

    def on_step_begin(self, args, state, control, **kwargs: Any) -> None:
        if self._last_end is None:  # first step, or after an evaluation/save: time from here
            self._last_end = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs: Any) -> None:
        now = time.perf_counter()
        self.seconds += now - self._last_end
        self.steps += 1
        for task in self._step_tasks:  # the step's time and count, shared among its micro-batches' tasks
            figures = self.by_task.setdefault(task, [0.0, 0.0, 0.0])
            figures[1] += (now - self._last_end) / len(self._step_tasks)
            figures[2] += 1 / len(self._step_tasks)
        self._step_tasks = []
        self._last_end = now

    def on_evaluate(self, args, state, control, **kwargs: Any) -> None:
        self._last_end = None

    def on_save(self, args, state, control, **kwargs: Any) -> None:
        self._last_end = None

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs: Any
    ) -> None:
        if logs is None or "loss" not in logs or self.steps == 0 or self.seconds <= 0:
            return  # evaluation logs and the end-of-training summary carry no step window
        world = args.world_size
        figures = {
            "perf/samples_per_second": world * self.samples / self.seconds,
            "perf/tokens_per_second": world * self.tokens / self.seconds,
            "perf/step_seconds": self.seconds / self.steps,
            "perf/flops_per_step": world * self.flops / self.steps,
            "perf/tflops": world * self.flops / self.seconds / 1e12,
        }
        for task, (samples, seconds, steps) in self.by_task.items():
            if seconds > 0:
                figures[f"perf/{task}/samples_per_second"] = world * samples / seconds
                figures[f"perf/{task}/step_seconds"] = seconds / steps
        if self.peak:
            figures["perf/mfu"] = self.flops / self.seconds / self.peak  # per process over per-device peak
        logs.update(figures)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(figures)  # the Trainer stored a copy before calling on_log
        self._reset_window()

    def on_train_end(self, args, state, control, **kwargs: Any) -> None:
        self._remove_hooks()


def log_before_reporters(trainer) -> None:
    """Move mmft callbacks that add to the logs ahead of the reporting integrations, so every backend sees them."""
    callbacks = trainer.callback_handler.callbacks
    ours = [c for c in callbacks if isinstance(c, ThroughputCallback)]
    for callback in ours:
        callbacks.remove(callback)
    callbacks[1:1] = ours  # after DefaultFlowCallback, which decides when to log


# -- plots -------------------------------------------------------------------------------------------------------
_NOT_PLOTTED = ("runtime", "samples_per_second", "steps_per_second", "epoch")


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(row["step"], row[key]) for row in history if isinstance(row.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def plot_history(history: list[dict], output_dir: str | Path) -> list[Path]:
    """training_loss.png, learning_rate.png and eval_metrics.png (when there were evaluations) in `output_dir`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    output_dir = Path(output_dir)
    eval_keys = sorted({k for row in history for k in row if k.startswith("eval_") and not k.endswith(_NOT_PLOTTED)})
    panels = {"training_loss.png": ["loss"], "learning_rate.png": ["learning_rate"], "eval_metrics.png": eval_keys}
    written = []
    for filename, keys in panels.items():
        series = {key: _series(history, key) for key in keys}
        series = {key: xy for key, xy in series.items() if xy[0]}
        if not series:
            continue
        figure = Figure(figsize=(6, 4), dpi=100)  # no pyplot: no global backend state, safe in any process
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for key, (steps, values) in series.items():
            axes.plot(steps, values, marker="o" if len(steps) < 20 else None, label=key)
        axes.set_xlabel("optimizer step")
        axes.set_title(filename.removesuffix(".png").replace("_", " "))
        axes.grid(alpha=0.3)
        if len(series) > 1 or filename == "eval_metrics.png":
            axes.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(output_dir / filename)
        written.append(output_dir / filename)
    return written


class PlotCallback(TrainerCallback):
    """At the end of training, PNG plots of training loss, learning rate and eval metrics in `output_dir`."""

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        if state.is_world_process_zero:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            for path in plot_history(state.log_history, args.output_dir):
                logger.info("PlotCallback: wrote %s", path)


# -- model card --------------------------------------------------------------------------------------------------
class AugmentationEpochCallback(TrainerCallback):
    """Tells a training augmentation (`mmft.data.augment.TrainAugmentation`) which epoch starts, so that each epoch
    draws anew; set before the epoch's DataLoader iterator (and its workers) starts. On a resume the Trainer's
    `state.epoch` is the checkpoint's (e.g. 1.5 = half of the second epoch), so the same epoch is named again."""

    def __init__(self, augmentation) -> None:
        self.augmentation = augmentation

    def on_train_begin(self, args, state, control, **kwargs: Any) -> None:
        if args.dataloader_num_workers > 0 and args.dataloader_persistent_workers and state.is_world_process_zero:
            logger.warning(
                "mmft: --augment with --dataloader_persistent_workers: the workers keep the first epoch's "
                "augmentation seeds, so every epoch repeats the same draws"
            )

    def on_epoch_begin(self, args, state, control, **kwargs: Any) -> None:
        self.augmentation.epoch = math.floor((state.epoch or 0.0) + 1e-6)


def training_augmentation(dataloader) -> str:
    """The card's sentence on the augmentation of `dataloader`'s training split ("none" when it has none)."""
    from .data.collator import split_transform

    augment = getattr(split_transform(getattr(dataloader, "dataset", None)), "augment", None)
    return augment.describe() if hasattr(augment, "describe") else "none"


class ModelCardCallback(TrainerCallback):
    """
    Writes `README.md` (a Hub model card, see `mmft.hub.render_model_card`) in `output_dir` at the end of training.
    Metrics come from `test_results.json` when it exists, else from the last evaluation; call `write(...)` again
    after testing (the recipe does) to put the final test metrics in. When training starts it notes the optimizer's
    parameter groups (when mmft grouped them, `mmft.param_groups`) and the training split's augmentation, which the
    card records.
    """

    def __init__(self, dataset: str | None = None, lora_plan=None, model_name: str | None = None) -> None:
        self.dataset, self.lora_plan, self.model_name = dataset, lora_plan, model_name
        self.learning_rates: list[tuple[str, int, float]] | None = None
        self.augmentation: str | None = None

    def on_train_begin(self, args, state, control, optimizer=None, train_dataloader=None, **kwargs: Any) -> None:
        from .param_groups import describe_groups

        self.learning_rates = describe_groups(optimizer.param_groups) if optimizer is not None else None
        self.augmentation = training_augmentation(train_dataloader)

    def write(
        self, args: TrainingArguments, state: TrainerState | None, model, output_dir: str | Path | None = None
    ) -> Path:
        """Write the card into `output_dir` (default: `args.output_dir`; the final save passes its staging folder)."""
        from .hub import write_model_card

        return write_model_card(
            output_dir or args.output_dir,
            model,
            args,
            dataset=self.dataset,
            lora_plan=self.lora_plan,
            log_history=state.log_history if state else None,
            model_name=self.model_name,
            learning_rates=self.learning_rates,
            augmentation=self.augmentation,
        )

    def on_train_end(self, args, state, control, model=None, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.write(args, state, model)


def build_callbacks(output_args, dataset: str | None = None, lora_plan=None) -> list[TrainerCallback]:
    """The callbacks the recipe's `OutputArguments` switch on."""
    callbacks: list[TrainerCallback] = []
    if output_args.throughput:
        callbacks.append(ThroughputCallback(peak_flops=output_args.peak_flops))
    if output_args.plots:
        callbacks.append(PlotCallback())
    if output_args.model_card:
        callbacks.append(ModelCardCallback(dataset=dataset, lora_plan=lora_plan))
    return callbacks


__all__ = [
    "AugmentationEpochCallback",
    "ModelCardCallback",
    "build_callbacks",
    "PEAK_FLOPS",
    "PlotCallback",
    "ThroughputCallback",
    "log_before_reporters",
    "measure_cpu_peak_flops",
    "peak_flops",
    "plot_history",
]
