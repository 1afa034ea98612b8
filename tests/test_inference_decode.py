"""Inference sees what training saw: every entry point decodes an image file exactly as the training transform does,
and truncates texts at the length the model was trained with (saved with the processor).

Entry points: `pipeline("mmft-vqa")` with a path, a PIL image, a URL and a base64 string; `mmft predict --image`;
`mmft predict --dataset` with a JSONL and with a dataset folder; `mmft explain`. Files: RGBA whose transparent pixels
hide another colour, a palette PNG with a transparent index, 16-bit grayscale, CMYK JPEG, EXIF-rotated JPEG. The
pixels each entry point hands the model are compared bit for bit with those of `ImageTextTransform` (the training
path, `mmft.data.collator.decode_image`).
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model
from PIL import Image
from transformers import AutoProcessor, pipeline
from transformers.image_utils import load_image

import mmft
from mmft.cli import main
from mmft.data.collator import ImageTextTransform, decode_image
from mmft.processing_mmft import MMFTProcessor

QUESTION = "what color is the shape?"
KINDS = ("rgba", "palette", "gray16", "cmyk", "exif")


def _write(folder: Path, kind: str) -> Path:
    """A file whose naive decode differs from training's (except CMYK, which is only converted)."""
    base = np.full((24, 40, 3), 255, dtype=np.uint8)
    base[4:12, 4:20] = (0, 0, 255)  # an off-centre blue block: rotation and position matter
    if kind == "rgba":
        rgba = np.dstack([np.zeros_like(base), np.full((24, 40), 255, np.uint8)])
        rgba[..., 0] = 255  # every pixel red underneath ...
        rgba[4:12, 4:20] = (0, 0, 255, 255)
        rgba[12:, :, 3] = 0  # ... and the bottom half transparent: training sees white there, convert("RGB") red
        Image.fromarray(rgba, "RGBA").save(path := folder / "rgba.png")
    elif kind == "palette":
        image = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        palette = image.getpalette()[:12]
        hidden = image.getpixel((30, 20))  # the white index: make it red and transparent
        palette[3 * hidden : 3 * hidden + 3] = [255, 0, 0]
        image.putpalette(palette)
        image.save(path := folder / "palette.png", transparency=hidden)
    elif kind == "gray16":
        ramp = np.linspace(0, 40000, 40, dtype=np.uint16)[None].repeat(24, axis=0)
        Image.fromarray(ramp).save(path := folder / "gray16.png")  # mode I;16: rescaled by training, clipped by PIL
    elif kind == "cmyk":
        Image.fromarray(base).convert("CMYK").save(path := folder / "cmyk.jpg", quality=95)
    else:
        image = Image.fromarray(base)
        exif = image.getexif()
        exif[0x0112] = 6  # stored sideways: upright is a 90-degree turn
        image.save(path := folder / "exif.jpg", exif=exif.tobytes(), quality=95)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    model = tiny_model("co_attention", "timm_cnn")
    model.save_pretrained(root / "model")
    MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32).save_pretrained(root / "model")
    (root / "images").mkdir()
    files = {kind: _write(root / "images", kind) for kind in KINDS}
    return {"root": root, "model": root / "model", "files": files}


def _training_pixels(folder: Path, path: Path) -> torch.Tensor:
    """(3, H, W): what the training transform makes of `path` (an undecoded `datasets` image, as in training)."""
    transform = ImageTextTransform(AutoProcessor.from_pretrained(folder).image_processor, None, split="eval")
    return transform({"image": [{"path": str(path), "bytes": None}]})["pixel_values"][0]


@pytest.fixture
def seen(monkeypatch):
    """Every `pixel_values` / `input_ids` batch a VQA model is called with, in call order."""
    calls = []
    forward = mmft.MMFTForVisualQuestionAnswering.forward

    def recording(self, *args, **kwargs):
        calls.append({k: kwargs[k] for k in ("pixel_values", "input_ids") if k in kwargs})
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(mmft.MMFTForVisualQuestionAnswering, "forward", recording)
    return calls


def _assert_seen(calls: list[dict], expected: list[torch.Tensor]) -> None:
    pixels = torch.cat([call["pixel_values"] for call in calls])
    assert pixels.shape[0] == len(expected)
    for got, want in zip(pixels, expected):
        assert torch.equal(got, want)


@pytest.mark.parametrize("kind", KINDS)
def test_files_tell_the_decoders_apart(saved, kind):
    """Negative control: the naive decodes (transformers' `load_image`; PIL without EXIF rotation) differ from
    training's on every file that has something to get wrong, so the entry-point tests below can fail."""
    path = saved["files"][kind]
    trained = np.asarray(decode_image({"path": str(path), "bytes": None}, "test"))
    naive = np.asarray(load_image(str(path)) if kind != "exif" else Image.open(path).convert("RGB"))
    if kind == "cmyk":
        assert np.array_equal(naive, trained)  # only converted; listed so that every entry point is run on it
    else:
        assert naive.shape != trained.shape or np.abs(naive.astype(int) - trained).max() > 50


@pytest.mark.parametrize("kind", KINDS)
def test_pipeline_with_a_path_and_a_pil_image(saved, seen, kind):
    path = saved["files"][kind]
    vqa = pipeline("mmft-vqa", model=str(saved["model"]))
    vqa(image=str(path), question=QUESTION)
    with Image.open(path) as opened:  # as the user opened it: lazily, untouched
        vqa(image=opened, question=QUESTION)
    _assert_seen(seen, [_training_pixels(saved["model"], path)] * 2)


def test_pipeline_with_a_url_and_base64(saved, seen):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(saved["root"] / "images"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        vqa = pipeline("mmft-vqa", model=str(saved["model"]))
        for kind in ("rgba", "exif"):
            path = saved["files"][kind]
            vqa(image=f"http://127.0.0.1:{server.server_address[1]}/{path.name}", question=QUESTION)
            vqa(image=base64.b64encode(path.read_bytes()).decode(), question=QUESTION)
    finally:
        server.shutdown()
    expected = [_training_pixels(saved["model"], saved["files"][kind]) for kind in ("rgba", "exif")]
    _assert_seen(seen, [expected[0], expected[0], expected[1], expected[1]])


@pytest.mark.parametrize("kind", KINDS)
def test_cli_predict_image_and_explain(saved, seen, kind, tmp_path, capsys):
    path = saved["files"][kind]
    assert main(["predict", "--model", str(saved["model"]), "--image", str(path), "--question", QUESTION]) == 0
    assert (
        main(
            [
                "explain",
                "--model",
                str(saved["model"]),
                "--image",
                str(path),
                "--question",
                QUESTION,
                "--out",
                str(tmp_path / "heat.png"),
            ]
        )
        == 0
    )
    _assert_seen(seen, [_training_pixels(saved["model"], path)] * 2)


def test_cli_predict_dataset_jsonl_and_folder(saved, seen, tmp_path):
    files = saved["files"]
    rows = [{"image": str(files[kind]), "question": QUESTION, "answers": ["red"]} for kind in KINDS]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for split in ("train", "test"):  # an imagefolder dataset, as the recipe reads it
        folder = tmp_path / "folder" / split
        folder.mkdir(parents=True)
        for row in rows:
            (folder / Path(row["image"]).name).write_bytes(Path(row["image"]).read_bytes())
        (folder / "metadata.jsonl").write_text(
            "".join(
                json.dumps({"file_name": Path(row["image"]).name, "question": QUESTION, "answers": ["red"]}) + "\n"
                for row in rows
            )
        )
    for source in (tmp_path / "rows.jsonl", tmp_path / "folder"):
        assert (
            main(
                [
                    "predict",
                    "--model",
                    str(saved["model"]),
                    "--dataset",
                    str(source),
                    "--batch_size",
                    "1",
                    "--output",
                    str(tmp_path / "out.jsonl"),
                ]
            )
            == 0
        )
    _assert_seen(seen, [_training_pixels(saved["model"], files[kind]) for kind in KINDS] * 2)


# -- text length ------------------------------------------------------------------------------------------------------
def test_processor_saves_its_truncation_length_and_inference_uses_it(saved, seen, tmp_path):
    processor = MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32)
    assert processor.max_length == 64  # the default, as before
    processor.max_length = 100
    tiny_model("co_attention", "timm_cnn").save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["max_length"] == 100
    loaded = AutoProcessor.from_pretrained(tmp_path)
    long_question = " ".join(["is the shape red"] * 60) + "?"
    assert loaded.max_length == 100 and loaded(text=long_question)["input_ids"].shape[-1] == 100
    assert loaded(text=long_question, max_length=20)["input_ids"].shape[-1] == 20  # an explicit value still wins
    pipeline("mmft-vqa", model=str(tmp_path))(image=str(saved["files"]["cmyk"]), question=long_question)
    assert seen[-1]["input_ids"].shape[-1] == 100
