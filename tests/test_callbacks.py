"""Callbacks in a real tiny Trainer run: throughput/MFU figures, PNG plots, the model card; FLOPs vs torch's counter."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import ANSWERS, IMAGE_SIZE, tiny_model
from datasets import Dataset
from huggingface_hub import ModelCard
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import Trainer, TrainerCallback, TrainingArguments

from mmft import BRIDGES
from mmft.callbacks import ModelCardCallback, PlotCallback, ThroughputCallback, log_before_reporters
from mmft.flops import forward_flops, training_flops

BATCH, STEPS, QUESTION_TOKENS = 4, 8, 11


class Recorder(TrainerCallback):
    """Stands in for a reporting integration (wandb, tensorboard): runs before user callbacks, keeps what it sees."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


def _dataset(tokenizer, n: int) -> Dataset:
    generator = torch.Generator().manual_seed(1)
    text = tokenizer(["is there a red circle in the image?"] * n, return_token_type_ids=False)
    assert len(text["input_ids"][0]) == QUESTION_TOKENS
    return Dataset.from_dict(
        {
            "pixel_values": torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator).numpy(),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "labels": [i % len(ANSWERS) for i in range(n)],
        }
    ).with_format("torch")


def _accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


@pytest.fixture(scope="module")
def run(tokenizer, tmp_path_factory):
    """One tiny Trainer run with every callback (and a reporter before them), then a test split like run_vqa."""
    output_dir = tmp_path_factory.mktemp("run")
    model = tiny_model("co_attention", "timm_vit")
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    recorder, card = Recorder(), ModelCardCallback(dataset="tiny-synthetic")
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_dataset(tokenizer, 32),
        eval_dataset=_dataset(tokenizer, 8),
        compute_metrics=_accuracy,
        callbacks=[recorder, ThroughputCallback(), PlotCallback(), card],
    )
    log_before_reporters(trainer)
    train_metrics = trainer.train().metrics
    card_before_test = (output_dir / "README.md").read_text()
    test_metrics = trainer.predict(_dataset(tokenizer, 8), metric_key_prefix="test").metrics
    trainer.save_metrics("test", test_metrics)
    card.write(args, trainer.state, model)
    return {
        "dir": output_dir,
        "trainer": trainer,
        "model": model,
        "recorder": recorder,
        "train_metrics": train_metrics,
        "card_before_test": card_before_test,
    }


def _train_logs(history: list[dict]) -> list[dict]:
    return [row for row in history if "loss" in row]


def test_throughput_figures_are_positive_and_consistent_with_step_time(run):
    logs = _train_logs(run["trainer"].state.log_history)
    assert len(logs) == STEPS // 2
    model = run["model"]
    image_tokens = (IMAGE_SIZE // 8) ** 2 + 1  # patches + class token
    per_sample = training_flops(model, forward_flops(model, image_tokens, QUESTION_TOKENS, (3, IMAGE_SIZE, IMAGE_SIZE)))
    for row in logs:
        samples_per_second, step_seconds = row["perf/samples_per_second"], row["perf/step_seconds"]
        assert samples_per_second > 0 and step_seconds > 0
        assert samples_per_second * step_seconds == pytest.approx(BATCH)  # every step trained one batch
        assert row["perf/tokens_per_second"] == pytest.approx(samples_per_second * (image_tokens + QUESTION_TOKENS))
        assert row["perf/flops_per_step"] == pytest.approx(BATCH * per_sample)
        assert row["perf/tflops"] * 1e12 == pytest.approx(row["perf/flops_per_step"] / step_seconds)
        assert 0 < row["perf/mfu"] <= 1
    # Timed steps exclude startup and evaluation, so they fit inside the Trainer's own runtime (counting evaluation
    # forwards would break the bound). No lower bound: on a loaded machine startup can dominate the runtime.
    measured = sum(row["perf/step_seconds"] for row in logs) * 2
    assert measured <= run["train_metrics"]["train_runtime"]


def test_reporters_see_throughput_once_callbacks_log_first(run):
    seen = [row for row in run["recorder"].seen if "loss" in row]
    assert seen and all("perf/samples_per_second" in row for row in seen)


def test_plots_are_valid_pngs(run):
    for name in ("training_loss.png", "learning_rate.png", "eval_metrics.png"):
        path = run["dir"] / name
        with Image.open(path) as image:
            image.verify()  # raises on a truncated or non-PNG file
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (600, 400)


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_model_card_metadata_parses_and_matches_test_results(run):
    text = (run["dir"] / "README.md").read_text()
    results = json.loads((run["dir"] / "test_results.json").read_text())
    meta = _front_matter(text)
    assert meta["library_name"] == "mmft" and meta["datasets"] == ["tiny-synthetic"]
    assert {"mmft", "visual-question-answering", "co_attention"} <= set(meta["tags"])
    [entry] = meta["model-index"][0]["results"]
    assert entry["dataset"]["split"] == "test"
    assert {m["name"]: m["value"] for m in entry["metrics"]} == {"test_accuracy": results["test_accuracy"]}
    assert ModelCard.load(run["dir"] / "README.md").data.eval_results[0].metric_value == results["test_accuracy"]
    # towers: a random-config vision tower is from scratch, and the text tower too (tiny config, no source)
    assert text.count("trained from scratch (random init)") == 2
    assert "import mmft" in text and "AutoModelForVisualQuestionAnswering.from_pretrained" in text
    assert f"| test_accuracy | {results['test_accuracy']:.4f} |" in text


def test_model_card_before_test_uses_last_evaluation(run):
    meta = _front_matter(run["card_before_test"])
    [entry] = meta["model-index"][0]["results"]
    last_eval = [row for row in run["trainer"].state.log_history if "eval_accuracy" in row][-1]
    assert entry["dataset"]["split"] == "eval"
    assert entry["metrics"][0]["value"] == last_eval["eval_accuracy"]


FLOPS_CASES = [(bridge, "timm_vit") for bridge in sorted(BRIDGES)] + [
    ("co_attention", "hf_vit"),
    ("cross_attention", "timm_cnn"),
]


@pytest.mark.parametrize(("bridge", "vision"), FLOPS_CASES)
def test_flops_estimate_matches_torch_flop_counter(bridge, vision, batch, tokenizer):
    model = tiny_model(bridge, vision).eval()
    # Long questions, so attention (quadratic in tokens) is a large share of the FLOPs and must be counted right.
    text = tokenizer(
        ["is there a red circle or a blue square in the top left of the image?" * 4] * 2,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    batch = {"pixel_values": batch["pixel_values"][:2], **text}
    pixels = batch["pixel_values"]
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        outputs = model.core(pixels, batch["input_ids"], batch["attention_mask"])  # MATH: SDPA as countable matmuls
        model.classifier(outputs.pooled)
    counted = counter.get_total_flops() / len(pixels)
    image_tokens, text_tokens = outputs.image_states.shape[1], outputs.text_states.shape[1]
    estimate = forward_flops(model, image_tokens, text_tokens, tuple(pixels.shape[1:])).total
    assert estimate == pytest.approx(counted, rel=0.06)


def test_training_flops_count_frozen_and_cached_towers_once_or_never(batch):
    from mmft import LoraPlan

    model = LoraPlan(vision="full", text="frozen").apply(tiny_model())
    forward = forward_flops(model, 17, 12, (3, IMAGE_SIZE, IMAGE_SIZE))
    assert training_flops(model, forward) == pytest.approx(3 * forward.vision + forward.text + 3 * forward.bridge)
    assert training_flops(model, forward, text_cached=True) == pytest.approx(3 * (forward.vision + forward.bridge))


def test_the_cpu_peak_probe_leaves_the_global_rng_alone(monkeypatch):
    # The probe runs once per process, at the first run's train begin: drawing its matrices from the global RNG gave
    # that run other dropout masks than any later run in the same process (same seed, other weights).
    import mmft.callbacks

    monkeypatch.setattr(mmft.callbacks, "_CPU_PEAK", None)
    before = torch.random.get_rng_state()
    assert mmft.callbacks.measure_cpu_peak_flops(size=64, seconds=0.01) > 0
    assert torch.equal(torch.random.get_rng_state(), before)
