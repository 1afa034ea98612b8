"""Publishing: uploads go to a fake Hub (tests/helpers_hub.py: intercepted at huggingface_hub's API layer, written to
a local folder); everything above it runs for real, and the captured repo must load back to identical predictions."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import tiny_model
from helpers_data import make_imagefolder
from helpers_hub import fake_hub
from helpers_launch import tiny_tower_flags
from PIL import Image
from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

import mmft  # noqa: F401  (registers the Auto classes)
from mmft.arguments import parse_recipe_args
from mmft.hub import load_adapter_model
from mmft.processing_mmft import MMFTProcessor
from mmft.training import run


@pytest.fixture
def hub(tmp_path):
    """A fake Hub (tests/helpers_hub.py): `.root / repo_id` holds the committed files, `.commits` the commit
    messages."""
    with fake_hub(tmp_path / "hub") as fake:
        yield fake


def _predict(model, processor, images, questions) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**processor(images=images, text=questions)).logits


def test_model_push_to_hub_round_trip(hub, batch):
    model = tiny_model("co_attention", "timm_cnn").eval()
    processor = MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32)
    model.push_to_hub("me/tiny-mmft")
    processor.push_to_hub("me/tiny-mmft")
    pushed = hub.root / "me" / "tiny-mmft"
    assert (pushed / "model.safetensors").is_file() and (pushed / "processor_config.json").is_file()
    loaded = AutoModelForVisualQuestionAnswering.from_pretrained(pushed)
    images = [Image.new("RGB", (40, 40), colour) for colour in ("red", "blue")]
    questions = ["what color is the shape?", "is there a circle?"]
    expected = _predict(model, processor, images, questions)
    assert torch.equal(_predict(loaded, AutoProcessor.from_pretrained(pushed), images, questions), expected)


@pytest.mark.parametrize("merged", [True, False], ids=["merged", "adapter"])
def test_recipe_push_to_hub_pushes_final_model_processor_and_card(merged, hub, tmp_path, tiny_text_dir):
    data = make_imagefolder(tmp_path / "data", n_train=16, n_test=6)
    argv = [
        "--dataset",
        str(data),
        *tiny_tower_flags(tiny_text_dir),
        "--lora_vision",
        "full",
        "--lora_text",
        "lora",
        "--save_merged",
        str(merged),
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "1e-3",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        "--output_dir",
        str(tmp_path / "out"),
        "--push_to_hub",
        "--hub_model_id",
        "me/vqa",
    ]
    args = parse_recipe_args(argv)
    run("vqa", args)
    pushed = hub.root / "me" / "vqa"
    assert hub.commits[-1] == "End of training"
    card = (pushed / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["library_name"] == "mmft"  # ours, not the Trainer's or peft's
    results = json.loads((pushed / "test_results.json").read_text())
    assert f"| test_accuracy | {results['test_accuracy']:.4f} |" in card
    if merged:
        assert not (pushed / "adapter_config.json").exists()
        model = AutoModelForVisualQuestionAnswering.from_pretrained(pushed)
    else:
        assert not (pushed / "model.safetensors").exists() and (pushed / "adapter_model.safetensors").is_file()
        model = load_adapter_model(str(pushed))
    records = [json.loads(line) for line in (data / "test" / "metadata.jsonl").read_text().splitlines()]
    images = [Image.open(data / "test" / r["file_name"]) for r in records]
    logits = _predict(model, AutoProcessor.from_pretrained(pushed), images, [r["question"] for r in records])
    written = [json.loads(line)["prediction"] for line in (pushed / "predictions.jsonl").read_text().splitlines()]
    assert [model.config.id2label[int(i)] for i in logits.argmax(-1)] == written
    if not merged:  # the merged view of the adapter predicts the same
        merged_model = load_adapter_model(str(pushed), merge=True)
        merged_logits = _predict(
            merged_model, AutoProcessor.from_pretrained(pushed), images, [r["question"] for r in records]
        )
        torch.testing.assert_close(merged_logits, logits, rtol=1e-4, atol=1e-5)


def test_adapter_of_a_from_scratch_lora_tower_is_refused(tmp_path):
    from mmft import LoraPlan
    from mmft.hub import save_final

    model = LoraPlan(vision="lora", text="full").apply(tiny_model())
    processor = MMFTProcessor.from_vision_text_pretrained("timm:vit_tiny_patch16_224", "minilm", image_size=32)
    save_final(model, processor, tmp_path, merged=False)
    with pytest.raises(ValueError, match="vision tower was trained from scratch"):
        load_adapter_model(str(tmp_path))


# -- the final save is all or nothing ------------------------------------------------------------------------------
def _disk_full_while_writing_weights(monkeypatch) -> None:
    import transformers.modeling_utils as modeling_utils
    from safetensors.torch import save_file

    def half_then_fail(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:
            handle.truncate(handle.seek(0, 2) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modeling_utils, "safe_save_file", half_then_fail)


def _failure_after_the_weights(monkeypatch) -> None:
    def fail(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MMFTProcessor, "save_pretrained", fail)


@pytest.mark.parametrize(
    "failure",
    [_disk_full_while_writing_weights, _failure_after_the_weights],
    ids=["disk full while writing the weights", "failure after the weights were written"],
)
def test_a_failed_final_save_leaves_the_previous_model_loadable(failure, tmp_path, monkeypatch, batch):
    from mmft.hub import save_final

    processor = MMFTProcessor.from_vision_text_pretrained("timm:vit_tiny_patch16_224", "minilm", image_size=32)
    previous = tiny_model(seed=1).eval()
    save_final(previous, processor, tmp_path, merged=True)
    with torch.no_grad():
        expected = previous(**batch).logits
    failure(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        save_final(tiny_model(seed=2), processor, tmp_path, merged=True)
    monkeypatch.undo()
    loaded = AutoModelForVisualQuestionAnswering.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, expected)  # the previous model, whole
    assert AutoProcessor.from_pretrained(tmp_path) is not None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folder left


def test_the_final_save_is_checked_before_it_replaces_anything(tmp_path, monkeypatch, batch):
    """A save that writes fine but does not load back (here: a weight dropped) never replaces the previous model."""
    import transformers.modeling_utils as modeling_utils
    from safetensors.torch import save_file

    from mmft.hub import save_final

    processor = MMFTProcessor.from_vision_text_pretrained("timm:vit_tiny_patch16_224", "minilm", image_size=32)
    save_final(tiny_model(seed=1), processor, tmp_path, merged=True)
    before = (tmp_path / "model.safetensors").read_bytes()

    def drop_one(tensors, filename, metadata=None):
        save_file(dict(list(tensors.items())[1:]), filename, metadata=metadata)

    monkeypatch.setattr(modeling_utils, "safe_save_file", drop_one)
    with pytest.raises(ValueError, match="does not load back"):
        save_final(tiny_model(seed=2), processor, tmp_path, merged=True)
    assert (tmp_path / "model.safetensors").read_bytes() == before
