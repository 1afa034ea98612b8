"""MMFTProcessor: image modes converted to RGB, tokenisation, save/load through AutoProcessor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

import mmft
from mmft.image_utils import to_rgb
from mmft.processing_mmft import MMFTProcessor


@pytest.fixture(scope="module")
def processor():
    return MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32)


def _rgb_image():
    array = np.zeros((20, 30, 3), dtype=np.uint8)
    array[5:15, 5:15] = (255, 0, 0)
    return Image.fromarray(array)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1", "LA", "I", "F"])
def test_every_mode_becomes_rgb(mode):
    image = (
        _rgb_image().convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
    )
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.size == (30, 20)


def test_16_bit_is_rescaled_not_clipped():
    image = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert abs(int(np.asarray(to_rgb(image))[0, 0, 0]) - 127) <= 1  # half of 65535 -> half of 255


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(to_rgb(image))[0, 0].tolist() == [255, 255, 255]


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (30, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    image.info["exif"] = exif.tobytes()
    image._exif = exif  # noqa: SLF001 (PIL keeps parsed EXIF here)
    assert to_rgb(image).size == (20, 30)


def test_call_returns_model_inputs(processor):
    out = processor(images=[_rgb_image(), _rgb_image().convert("L")], text=["what shape?", "is it red?"])
    assert out["pixel_values"].shape == (2, 3, 32, 32)
    assert out["input_ids"].shape[0] == 2 and "attention_mask" in out and "token_type_ids" not in out
    with pytest.raises(ValueError, match="needs images=, text= or both"):
        processor()


def test_save_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, mmft.MMFTProcessor)
    a = processor(images=_rgb_image(), text="what shape?")
    b = loaded(images=_rgb_image(), text="what shape?")
    assert all(torch.equal(a[k], b[k]) for k in a)
