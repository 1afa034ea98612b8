"""Precision and compile flags on a machine without a GPU: `--use_cpu` by default, bf16 trains, fp16 refused,
torch.compile."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ANSWERS, IMAGE_SIZE, tiny_text_config, tiny_vision_config
from datasets import Dataset
from transformers import Trainer, TrainingArguments

import mmft
from mmft.arguments import parse_recipe_args

pytestmark = pytest.mark.skipif(torch.accelerator.is_available(), reason="checks the behaviour on CPU-only machines")


def _training_args(tmp_path, *flags: str):
    return parse_recipe_args(["--output_dir", str(tmp_path), "--report_to", "none", *flags]).training


def test_cpu_only_machine_defaults_to_use_cpu(tmp_path):
    # Without it, `accelerate launch --num_processes 2` would start two unconnected single-process runs.
    assert _training_args(tmp_path).use_cpu is True
    assert _training_args(tmp_path, "--use_cpu", "false").use_cpu is False  # an explicit flag wins


def test_bf16_runs_on_the_cpu(tmp_path):
    args = _training_args(tmp_path, "--bf16")
    assert args.bf16 and args.device.type == "cpu"


def test_fp16_on_the_cpu_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="--fp16 needs a GPU.*--bf16"):
        _training_args(tmp_path, "--fp16")


def _dataset(tokenizer, n: int = 16) -> Dataset:
    generator = torch.Generator().manual_seed(1)
    text = tokenizer(["is there a red circle in the image?"] * n, return_token_type_ids=False)
    return Dataset.from_dict(
        {
            "pixel_values": torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator).numpy(),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "labels": [i % len(ANSWERS) for i in range(n)],
        }
    ).with_format("torch")


def _train(tokenizer, tmp_path, steps: int = 3, **flags):
    """A few real Trainer steps on a tiny model; returns the trainer and the dtypes a bridge projection computed in.

    Dropout is off everywhere: compiled code draws its dropout masks from another RNG stream than eager code.
    """
    text_config = tiny_text_config()
    text_config.hidden_dropout_prob = text_config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    model = mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
        vision=tiny_vision_config("timm_vit"),
        text=text_config,
        labels=ANSWERS,
        num_bridge_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        hidden_dropout=0.0,
    )
    seen_dtypes: set[torch.dtype] = set()
    bridge_linear = next(module for module in model.core.bridge.modules() if isinstance(module, torch.nn.Linear))
    bridge_linear.register_forward_hook(lambda module, inputs, output: seen_dtypes.add(output.dtype))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        **flags,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_dataset(tokenizer))
    trainer.train()
    return trainer, seen_dtypes


@pytest.mark.parametrize(("bf16", "compute_dtype"), [(True, torch.bfloat16), (False, torch.float32)])
def test_bf16_training_on_the_cpu_computes_in_bfloat16_and_keeps_fp32_weights(tokenizer, tmp_path, bf16, compute_dtype):
    # The fp32 case is the control: the same hook sees float32 when --bf16 is off, so the assertion can fail.
    trainer, seen_dtypes = _train(tokenizer, tmp_path, bf16=bf16)
    assert seen_dtypes == {compute_dtype}
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}  # autocast, master weights stay fp32
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)


def test_torch_compile_trains_like_eager(tokenizer, tmp_path):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager, _ = _train(tokenizer, tmp_path / "eager")
    compiled, _ = _train(tokenizer, tmp_path / "compiled", torch_compile=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # dynamo really captured graphs
    eager_losses = [log["loss"] for log in eager.state.log_history if "loss" in log]
    compiled_losses = [log["loss"] for log in compiled.state.log_history if "loss" in log]
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-3)
    for (name, a), b in zip(eager.model.named_parameters(), compiled.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)
