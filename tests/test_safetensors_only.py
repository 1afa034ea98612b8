"""mmft reads weights from safetensors only: every loading entry point refuses a pickled `.bin` with a clear error.

Entry points: `from_pretrained` of every mmft model class (and so the Auto classes and `pipeline(...)`),
`mmft predict`, `from_vision_text_pretrained` with a tower folder, `mmft.hub.load_adapter_model`. Each folder under
test holds genuine weights, only pickled (`torch.save` of the same tensors), so transformers and peft would load it
(with `torch.load(weights_only=True)`) if mmft let them; a second copy holds a live payload that must never run.
The one way to read such a file is the caller's explicit `use_safetensors=False` (tested).
"""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch
from conftest import tiny_text_config, tiny_vision_config
from helpers_contract import MODEL_CLASSES, class_id, inputs_for, main_output, tiny
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForVisualQuestionAnswering, pipeline

import mmft
from mmft.cli import main
from mmft.hub import load_adapter_model, save_final
from mmft.processing_mmft import MMFTProcessor

REFUSED = r"safetensors only.*pickle"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _pickled(folder: Path, name: str, pickle_name: str, payload: Path | None = None) -> Path:
    """Replace `folder/name` (safetensors) by `folder/pickle_name` holding the same tensors as a torch pickle."""
    tensors = load_file(folder / name)
    (folder / name).unlink()
    torch.save({"weight": _Payload(payload)} if payload else tensors, folder / pickle_name)
    return folder


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=class_id)
def test_from_pretrained_refuses_a_pickled_model_unless_asked_explicitly(model_class, tmp_path):
    model = tiny(model_class)
    model.save_pretrained(tmp_path)
    _pickled(tmp_path, "model.safetensors", "pytorch_model.bin")
    with pytest.raises(OSError, match=REFUSED):
        model_class.from_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path, use_safetensors=False).eval()  # the caller's explicit choice
    inputs = inputs_for(model, labels=False)
    with torch.no_grad():
        assert torch.equal(main_output(loaded(**inputs)), main_output(model(**inputs)))


@pytest.fixture
def pickled_vqa(tmp_path):
    """A saved VQA model + processor whose weights are only a pickled pytorch_model.bin."""
    folder = tmp_path / "vqa"
    tiny(mmft.MMFTForVisualQuestionAnswering, vision="timm_cnn").save_pretrained(folder)
    MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32).save_pretrained(folder)
    return _pickled(folder, "model.safetensors", "pytorch_model.bin")


def test_auto_class_pipeline_and_cli_refuse_a_pickled_model(pickled_vqa, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    with pytest.raises(OSError, match=REFUSED):
        AutoModelForVisualQuestionAnswering.from_pretrained(pickled_vqa)
    with pytest.raises((OSError, ValueError), match=REFUSED):  # the pipeline wraps the loader's error in its own
        pipeline("mmft-vqa", model=str(pickled_vqa))
    with pytest.raises(SystemExit, match=REFUSED):  # the command prints why, without a traceback
        main(["predict", "--model", str(pickled_vqa), "--image", str(tmp_path / "red.png"), "--question", "what?"])


def _tower_folder(path: Path, kind: str) -> Path:
    config = tiny_text_config() if kind == "text" else tiny_vision_config("hf_vit")
    AutoModel.from_config(config).save_pretrained(path)
    return path


def test_a_pickled_tower_folder_is_refused(tmp_path):
    text = _pickled(_tower_folder(tmp_path / "bert", "text"), "model.safetensors", "pytorch_model.bin")
    with pytest.raises(OSError, match=REFUSED):
        mmft.MMFTModel.from_vision_text_pretrained(vision=tiny_vision_config("hf_vit"), text=str(text))


def _adapter_folder(tmp_path: Path) -> Path:
    """A LoRA run saved as an adapter (towers from local folders, so the base can be rebuilt)."""
    tmp_path.mkdir(exist_ok=True)
    vision, text = _tower_folder(tmp_path / "vit", "vision"), _tower_folder(tmp_path / "bert", "text")
    model = mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
        vision=str(vision),
        text=str(text),
        labels=["yes", "no"],
        num_bridge_layers=1,
        hidden_size=32,
        num_attention_heads=2,
    )
    model = mmft.LoraPlan(vision="lora", text="lora", r=4).apply(model)
    processor = MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32)
    save_final(model, processor, tmp_path / "adapter", merged=False)
    return tmp_path / "adapter"


def test_a_pickled_adapter_is_refused_and_a_safetensors_one_loads(tmp_path):
    folder = _adapter_folder(tmp_path)
    assert load_adapter_model(str(folder), merge=True) is not None  # control: the safetensors adapter loads
    _pickled(folder, "adapter_model.safetensors", "adapter_model.bin")
    with pytest.raises(OSError, match=REFUSED):
        load_adapter_model(str(folder))
    with pytest.raises(SystemExit, match=REFUSED):
        main(["predict", "--model", str(folder), "--image", "x.png", "--question", "what?"])


def test_a_live_pickle_payload_never_runs_through_any_entry_point(tmp_path):
    marker = tmp_path / "pwned"
    model_folder = tmp_path / "model"
    tiny(mmft.MMFTForVisualQuestionAnswering).save_pretrained(model_folder)
    _pickled(model_folder, "model.safetensors", "pytorch_model.bin", payload=marker)
    tower = _pickled(_tower_folder(tmp_path / "bert", "text"), "model.safetensors", "pytorch_model.bin", marker)
    adapter = _pickled(_adapter_folder(tmp_path / "lora"), "adapter_model.safetensors", "adapter_model.bin", marker)
    attempts = [
        lambda: AutoModelForVisualQuestionAnswering.from_pretrained(model_folder),
        lambda: mmft.MMFTModel.from_vision_text_pretrained(vision=tiny_vision_config("hf_vit"), text=str(tower)),
        lambda: load_adapter_model(str(adapter)),
    ]
    for attempt in attempts:
        with pytest.raises(OSError, match=REFUSED):
            attempt()
    assert not marker.exists()
