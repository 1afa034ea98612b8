"""Property tests: random images (size, mode, bytes) and random strings never fail with anything but the documented
errors (`mmft.data.DataError` from the data path, `ValueError` from the processor). Few examples, to stay fast."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmft.data import DataError, ImageTextCollator, ImageTextTransform
from mmft.data.collator import decode_image
from mmft.processing_mmft import MMFTProcessor

FAST = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr"]
HEADERS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP"]

texts = st.one_of(
    st.text(max_size=300),  # any Unicode text, including empty and whitespace-only
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),  # surrogates
    st.binary(max_size=20),
    st.none(),
)


@pytest.fixture(scope="module")
def processor():
    return MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32)


@st.composite
def images(draw) -> Image.Image:
    width, height = draw(st.integers(1, 96)), draw(st.integers(1, 96))
    seed = draw(st.integers(0, 2**16))
    array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(array).convert(draw(st.sampled_from(MODES)))


@FAST
@given(image=images(), text=texts)
def test_processor_gives_model_inputs_or_a_value_error(processor, image, text):
    try:
        out = processor(images=image, text=text)
    except ValueError:
        assert not isinstance(text, str) or not text.strip() or any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        return
    assert out["pixel_values"].shape == (1, 3, 32, 32) and torch.isfinite(out["pixel_values"]).all()
    if text is None:  # images only
        assert "input_ids" not in out
    else:
        assert out["input_ids"].shape[0] == 1 and out["input_ids"].shape[1] <= 64


@FAST
@given(header=st.sampled_from(HEADERS), body=st.binary(max_size=200))
def test_decoding_random_bytes_gives_rgb_or_a_data_error(header, body):
    try:
        image = decode_image({"bytes": header + body, "path": None}, "row 0")
    except DataError as error:
        assert "row 0: cannot decode image embedded bytes" in str(error)
        return
    assert image.mode == "RGB"


@st.composite
def encoded_images(draw) -> dict:
    """A real image file in a random mode/format, sometimes cut short."""
    image = draw(images())
    fmt = {"CMYK": "TIFF", "I": "TIFF", "F": "TIFF", "YCbCr": "JPEG"}.get(image.mode, "PNG")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = buffer.getvalue()
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return {"bytes": data if cut is None else data[:cut], "path": None}


@FAST
@given(rows=st.lists(st.tuples(encoded_images(), st.text(min_size=1, max_size=80)), min_size=1, max_size=4))
def test_transform_and_collator_give_a_batch_or_a_data_error(processor, rows):
    encode = lambda batch: {"labels": [{"a": 0, "b": 1}[answers[0]] for answers in batch["answers"]]}  # noqa: E731
    transform = ImageTextTransform(processor.image_processor, "question", encode)
    batch = {
        "image": [r[0] for r in rows],
        "question": [r[1] for r in rows],
        "answers": [["a"]] * len(rows),
        "row": list(range(len(rows))),
    }
    try:
        transformed = transform(batch)
    except DataError as error:
        assert "cannot decode image" in str(error)
        return
    examples = [{key: values[i] for key, values in transformed.items()} for i in range(len(rows))]
    out = ImageTextCollator(processor.tokenizer, max_length=16)(examples)
    assert out["pixel_values"].shape == (len(rows), 3, 32, 32) and out["input_ids"].shape[1] <= 16
