"""Bad input, one test per row of docs/robustness.md: every bad file or value is a clear error or a safe recovery.

Images and rows are real files in a real imagefolder dataset, decoded by the real transform and collator.
"""

from __future__ import annotations

import json
import logging
import re
import warnings

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Sequence, Value
from datasets import Image as ImageFeature
from helpers_data import attach_vqa, make_imagefolder, prepare_vqa
from PIL import Image

from mmft.data import BadExamplePolicy, DataError
from mmft.data import ImageTextCollator as VQACollator
from mmft.data.collator import decode_image
from mmft.data.validation import validate_split
from mmft.image_utils import ImageDataError, open_image
from mmft.input_checks import text_problem
from mmft.processing_mmft import MMFTProcessor
from mmft.tasks.vqa.task import VQATask

VQA_COLUMNS = VQATask.columns

RED = (255, 0, 0)


@pytest.fixture(scope="module")
def processor():
    return MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32)


def _decode(path) -> np.ndarray:
    return np.asarray(decode_image({"path": str(path), "bytes": None}, "test"))


# -- bad files with image extensions, and missing files ---------------------------------------------------------------
def _zero_bytes(path):
    path.write_bytes(b"")


def _not_an_image(path):
    path.write_text("this is a text file named like an image\n")


def _truncated(path):
    path.write_bytes(path.read_bytes()[:-40])  # PNG header and size intact, pixel data cut


def _missing(path):
    path.unlink()


# (breakage, when it is found, message)
BAD_FILES = {
    "zero_bytes": (_zero_bytes, "validation", r"cannot read image \(UnidentifiedImageError"),
    "not_an_image": (_not_an_image, "validation", r"cannot read image \(UnidentifiedImageError"),
    "truncated": (_truncated, "decode", r"cannot decode image .*0.png \(OSError"),
    "missing": (_missing, "validation", r"image file not found"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_image_file_raises_naming_row_and_file(case, tmp_path, processor):
    breakage, stage, message = BAD_FILES[case]
    root = make_imagefolder(tmp_path / "d")
    breakage(root / "train" / "0.png")
    if stage == "validation":  # found before training, by the header pre-pass
        with pytest.raises(DataError, match=r"split 'train', row 0, file .*0.png: " + message):
            prepare_vqa(root)
        return
    splits = prepare_vqa(root)  # header fine: found when decoded
    attach_vqa(splits, processor)
    with pytest.raises(DataError, match=r"split 'train', row 0: " + message):
        splits.train[0]


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_image_file_is_skipped_and_listed_under_skip(case, tmp_path, processor):
    breakage, stage, _ = BAD_FILES[case]
    root = make_imagefolder(tmp_path / "d")
    breakage(root / "train" / "3.png")
    policy = BadExamplePolicy("skip", rejects_file=str(tmp_path / "rejects.jsonl"), source=str(root))
    splits = prepare_vqa(root, policy=policy)
    attach_vqa(splits, processor, policy)
    collator = VQACollator(processor.tokenizer)
    batch = collator([splits.train[i] for i in range(6)])
    # 24 rows, row 3 bad: dropped before training (validation) or from its batch (decode)
    assert len(splits.train) == (23 if stage == "validation" else 24)
    assert batch["pixel_values"].shape[0] == (6 if stage == "validation" else 5)
    (entry,) = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert (entry["split"], entry["row"], entry["stage"]) == ("train", 3, stage)
    assert entry["file"].endswith("3.png") and entry["reason"]


# -- image modes: converted correctly, pixel values checked ---------------------------------------------------------
def _write(path, image: Image.Image, **save):
    image.save(path, **save)
    return path


def test_grayscale_becomes_equal_rgb_channels(tmp_path):
    path = _write(tmp_path / "g.png", Image.new("L", (5, 4), 77))
    assert _decode(path).shape == (4, 5, 3) and (_decode(path) == 77).all()


def test_rgba_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    image.putpixel((1, 1), (255, 0, 0, 255))  # one opaque red pixel
    image.putpixel((2, 2), (0, 0, 255, 128))  # half-transparent blue
    pixels = _decode(_write(tmp_path / "a.png", image))
    assert pixels[0, 0].tolist() == [255, 255, 255]  # transparent -> white, not the hidden red
    assert pixels[1, 1].tolist() == list(RED)
    assert pixels[2, 2].tolist() == pytest.approx([127, 127, 255], abs=1)


def test_palette_keeps_colours_and_transparency(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)  # index 0 green, index 1 red
    image.putpixel((3, 3), 1)
    plain = _decode(_write(tmp_path / "p.png", image))
    assert plain[0, 0].tolist() == [0, 255, 0] and plain[3, 3].tolist() == list(RED)
    transparent = _decode(_write(tmp_path / "pt.png", image, transparency=0))
    assert transparent[0, 0].tolist() == [255, 255, 255] and transparent[3, 3].tolist() == list(RED)


def test_cmyk_becomes_rgb(tmp_path):
    path = _write(tmp_path / "c.tiff", Image.new("CMYK", (4, 4), (0, 255, 255, 0)))  # 0 cyan, full M+Y = red
    assert Image.open(path).mode == "CMYK"
    assert _decode(path)[0, 0].tolist() == list(RED)


def test_16_bit_png_is_rescaled_not_clipped(tmp_path):
    array = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = _write(tmp_path / "16.png", Image.fromarray(array))
    assert Image.open(path).mode == "I;16"
    assert _decode(path)[0, :, 0].tolist() == pytest.approx([0, 127, 255], abs=1)  # not all 255 (clipped)


def test_one_pixel_image_fills_the_model_input(tmp_path, processor):
    path = _write(tmp_path / "1.png", Image.new("RGB", (1, 1), RED))
    pixels = processor(images=[Image.fromarray(_decode(path))])["pixel_values"]  # (1, 3, 32, 32)
    mean, std = processor.image_processor.image_mean, processor.image_processor.image_std
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(RED, mean, std)])
    assert pixels.shape == (1, 3, 32, 32)
    torch.testing.assert_close(pixels[0], expected[:, None, None].expand(3, 32, 32), atol=1e-3, rtol=0)


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    image = Image.new("RGB", (30, 20), (0, 0, 0))
    image.paste(RED, (0, 0, 6, 6))  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: display rotated 90 degrees clockwise
    pixels = _decode(_write(tmp_path / "r.jpg", image, exif=exif.tobytes(), quality=95))
    assert pixels.shape == (30, 20, 3)  # height 30, width 20: upright
    assert pixels[1, 18, 0] > 200 and pixels[1, 18, 1] < 60  # the block moved to the top-right
    assert pixels[1, 1].max() < 60


def test_image_over_the_decompression_bomb_limit_is_an_error(tmp_path, monkeypatch):
    path = _write(tmp_path / "big.png", Image.new("RGB", (12, 12)))  # 144 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings(record=True) as caught:  # control: PIL alone only warns below 2 x the limit
        warnings.simplefilter("always")
        Image.open(path).load()
    assert any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)
    with pytest.raises(ImageDataError, match=r"144 pixels is over the decompression-bomb limit .* = 100"):
        open_image(str(path), decode=False)
    with pytest.raises(DataError, match="big.png .*decompression-bomb"):
        _decode(path)


def test_bomb_is_rejected_by_the_pre_pass(tmp_path, monkeypatch):
    root = make_imagefolder(tmp_path / "d")  # 24x24 images = 576 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(DataError, match=r"row 0, file .*0.png: cannot read image .*decompression-bomb"):
        prepare_vqa(root)


# -- questions ------------------------------------------------------------------------------------------------------
QUESTIONS = {
    "none": (None, r"empty question \(None\)"),
    "empty": ("", r"empty question"),
    "whitespace": (" \t\n ", r"empty question"),
    "bytes": (b"what colour\xff?", r"question is bytes, not text"),
    "lone_surrogate": ("what \udc80colour?", r"not valid UTF-8 text \(surrogates not allowed at character 5\)"),
}


@pytest.mark.parametrize("case", QUESTIONS)
def test_unusable_question_is_named_by_the_pre_pass_and_the_processor(case, processor):
    question, message = QUESTIONS[case]
    assert re.search(message, text_problem(question, "question") or "")
    with pytest.raises(ValueError, match=r"text 1: (text is )?" + message.replace("question", "text")):
        processor(text=["is it red?", question])


def test_unusable_questions_in_a_dataset_are_rows_of_the_policy(tmp_path):
    path = _write(tmp_path / "x.png", Image.new("RGB", (4, 4)))
    questions = [None, "", "  ", "fine?"]  # (Arrow cannot even store a lone surrogate; see the metadata test)
    features = Features({"image": ImageFeature(), "question": Value("string"), "answers": Sequence(Value("string"))})
    data = Dataset.from_dict({"image": [str(path)] * 4, "question": questions, "answers": [["a"]] * 4}, features)
    with pytest.raises(DataError, match=r"split 'train', row 0, file .*x.png: empty question \(None\)"):
        validate_split(data, "train", "mem", VQA_COLUMNS)
    policy = BadExamplePolicy("skip", max_bad_fraction=1.0, source="mem")
    assert validate_split(data, "train", "mem", VQA_COLUMNS, policy)["question"] == ["fine?"]
    assert sorted(policy.rejected("train")) == [0, 1, 2]


def test_metadata_that_is_not_utf8_names_file_and_line(tmp_path):
    root = make_imagefolder(tmp_path / "d")
    metadata = root / "train" / "metadata.jsonl"
    lines = metadata.read_bytes().splitlines()
    lines[2] = lines[2].replace(b"shape", b"sh\xe9pe")  # latin-1 e-acute
    metadata.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"metadata.jsonl, line 3: not UTF-8 text \(byte 0xe9 at column \d+\)"):
        prepare_vqa(root)
    lines[2] = lines[2].replace(b"sh\xe9pe", b"sh\\udc80pe")  # a JSON-escaped lone surrogate: valid JSON, not text
    metadata.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"metadata.jsonl, line 3: question is not valid UTF-8 text"):
        prepare_vqa(root)


def test_5000_token_question_is_truncated_and_says_so(processor, caplog):
    long_question = "is the shape red " * 1250  # 5,000 words
    collator = VQACollator(processor.tokenizer, max_length=64, what="question")
    example = {"pixel_values": torch.zeros(3, 32, 32), "labels": 0}
    with caplog.at_level(logging.WARNING, logger="mmft.input_checks"):
        batch = collator([{**example, "text": long_question}, {**example, "text": "is it red?"}])
    assert batch["input_ids"].shape == (2, 64)
    (record,) = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert "question of 5002 tokens truncated to max_length=64" in record.getMessage()  # 5,000 + [CLS] [SEP]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmft.input_checks"):
        collator([{**example, "text": "is it red?"}])
    assert not caplog.records  # short questions: nothing said


# -- answers and vocabulary -----------------------------------------------------------------------------------------
def _rewrite(path, row: int, **changes):
    lines = path.read_text().splitlines()
    record = json.loads(lines[row])
    record.update(changes)
    lines[row] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


def test_empty_answers_raise_or_are_skipped(tmp_path):
    root = make_imagefolder(tmp_path / "d")
    _rewrite(root / "train" / "metadata.jsonl", 5, answers=[])
    with pytest.raises(DataError, match=r"row 5, file .*5.png: 'answers' is empty"):
        prepare_vqa(root)
    policy = BadExamplePolicy("skip", source=str(root))
    assert len(prepare_vqa(root, policy=policy).train) == 23
    assert list(policy.rejected("train")) == [5]


def test_unseen_answers_train_ignored_with_one_log_line_eval_scored_wrong(tmp_path, caplog):
    from mmft.tasks.vqa.task import vqa_compute_metrics as make_compute_metrics

    root = make_imagefolder(tmp_path / "d")
    for row in (0, 1):
        _rewrite(root / "train" / "metadata.jsonl", row, answers=["purple"])
    _rewrite(root / "test" / "metadata.jsonl", 0, answers=["purple"] * 3)
    with caplog.at_level(logging.WARNING, logger="mmft.data"):
        splits = prepare_vqa(root, top_k_answers=4)  # 'purple' is 2 rows: not top 4
    assert "purple" not in splits.labels and len(splits.train) == 22  # the two rows are not trained on
    (line,) = [r.getMessage() for r in caplog.records if "training questions" in r.getMessage()]
    assert line.startswith("2 of 24 training questions have no answer in the 4-answer vocabulary; they are ignored")
    references = splits.eval["answers"]
    perfect = [splits.labels.index(r[0]) if r[0] in splits.labels else 0 for r in references]
    compute = make_compute_metrics(references, None, dict(enumerate(splits.labels)))
    accuracy = compute(type("P", (), {"predictions": np.array(perfect)})())["accuracy"]
    # every known answer right, the unseen one wrong; 3 identical annotator answers score 2/3 (leave-one-out average)
    assert accuracy == pytest.approx(7 / 8 * 2 / 3)


def test_checkpoint_vocabulary_mismatch_is_counted_or_refused(tmp_path, caplog):
    root = make_imagefolder(tmp_path / "d")  # answers: red, blue, yes, no
    with caplog.at_level(logging.WARNING, logger="mmft.data"):
        prepare_vqa(root, answers=["red", "blue", "circle"])
    message = " ".join(r.getMessage() for r in caplog.records)
    assert (
        "the checkpoint knows 3 answers; the dataset's training split uses 4 distinct answers, 2 of them unknown "
        "to the checkpoint (e.g. ['no', 'yes']); 12 of 24 training and 4 of 8 eval questions"
    ) in message
    with pytest.raises(
        DataError, match=r"knows 2 answers.*4 of them unknown.*24 of 24 training.*Is this the checkpoint"
    ):
        prepare_vqa(root, answers=["circle", "square"])


# -- schema and splits ----------------------------------------------------------------------------------------------
def test_missing_column_is_a_schema_error_even_under_skip(tmp_path):
    data = Dataset.from_dict({"image": ["x.png"], "query": ["q?"], "answers": [["a"]]})
    with pytest.raises(DataError, match=r"missing column\(s\) \['question'\]; found \['image', 'query', 'answers'\]"):
        validate_split(data, "train", "mem", VQA_COLUMNS, BadExamplePolicy("skip", max_bad_fraction=1.0))


def test_unknown_train_split_lists_the_available_ones(tmp_path):
    root = make_imagefolder(tmp_path / "d")
    with pytest.raises(DataError, match=r"no train split 'training'; available splits: \['test', 'train'\]"):
        prepare_vqa(root, spec={"train_split": "training"})


def test_unknown_tower_name_says_what_a_name_may_be():
    from mmft.towers import text_config_from_name, vision_config_from_name

    with pytest.raises(ValueError, match=r"unknown text tower '/no/such/tower': .*offline alias \(minilm\)"):
        text_config_from_name("/no/such/tower")
    with pytest.raises(ValueError, match=r"unknown vision tower '/no/such/tower': .*timm:<architecture>"):
        vision_config_from_name("/no/such/tower")


# -- the skip policy itself -----------------------------------------------------------------------------------------
def test_skip_aborts_when_more_than_max_bad_fraction_is_bad(tmp_path):
    root = make_imagefolder(tmp_path / "d")
    for i in range(3):  # 3 of 24 = 12.5%
        (root / "train" / f"{i}.png").write_bytes(b"")
    rejects = tmp_path / "rejects.jsonl"
    policy = BadExamplePolicy("skip", max_bad_fraction=0.1, rejects_file=str(rejects), source="d")
    with pytest.raises(
        DataError, match=r"3 of 24 rows of split 'train' are bad \(12.5%\), more than --max_bad_fraction 0.1"
    ):
        prepare_vqa(root, policy=policy)
    assert len(rejects.read_text().splitlines()) == 3  # the ledger is complete even when aborting
    policy = BadExamplePolicy("skip", max_bad_fraction=0.15, rejects_file=str(tmp_path / "r2.jsonl"), source="d")
    assert len(prepare_vqa(root, policy=policy).train) == 21


def test_decode_time_skips_with_dataloader_workers_are_counted_once(tmp_path, processor):
    root = make_imagefolder(tmp_path / "d", n_train=40)
    for i in (4, 17, 33):
        _truncated(root / "train" / f"{i}.png")
    rejects = tmp_path / "rejects.jsonl"
    policy = BadExamplePolicy("skip", max_bad_fraction=0.1, rejects_file=str(rejects), source="d")
    splits = prepare_vqa(root, policy=policy)
    attach_vqa(splits, processor, policy)
    loader = torch.utils.data.DataLoader(
        splits.train, batch_size=8, num_workers=2, collate_fn=VQACollator(processor.tokenizer)
    )
    for _ in range(2):  # two epochs: each bad row is met twice, listed once
        assert sum(batch["pixel_values"].shape[0] for batch in loader) == 37
    assert sorted(json.loads(line)["row"] for line in rejects.read_text().splitlines()) == [4, 17, 33]
    assert policy.summary().startswith("--on_bad_example skip: skipped rows (train: 3 of 40, eval: 0 of 8)")


def test_a_batch_of_only_bad_rows_is_never_empty(tmp_path, processor):
    root = make_imagefolder(tmp_path / "d")
    for i in (1, 2):
        _truncated(root / "train" / f"{i}.png")
    policy = BadExamplePolicy("skip", max_bad_fraction=0.1, source="d")
    splits = prepare_vqa(root, policy=policy)
    attach_vqa(splits, processor, policy)
    collator = VQACollator(processor.tokenizer)
    with pytest.raises(DataError, match="all 1 examples of a batch were unreadable"):
        collator([splits.train[1]])  # nothing good seen yet: a clear error, not an empty batch
    good = collator([splits.train[0]])
    stand_in = collator([splits.train[1], splits.train[2]])  # all bad: the last good example stands in
    assert torch.equal(stand_in["pixel_values"], good["pixel_values"])


def test_eval_rows_that_fail_to_decode_keep_alignment_and_are_not_scored(tmp_path, processor):
    from mmft.data import excluded_eval_positions
    from mmft.tasks.vqa.task import vqa_compute_metrics as make_compute_metrics

    root = make_imagefolder(tmp_path / "d")
    _truncated(root / "test" / "2.png")
    policy = BadExamplePolicy("skip", max_bad_fraction=0.2, source="d")
    splits = prepare_vqa(root, policy=policy)
    attach_vqa(splits, processor, policy)
    batch = VQACollator(processor.tokenizer)([splits.eval[i] for i in range(8)])
    assert batch["pixel_values"].shape[0] == 8  # kept, with a blank stand-in image
    raw = splits.eval.with_format(None)
    excluded = excluded_eval_positions(policy, raw["row"])
    assert excluded == {2}
    predictions = np.array([splits.labels.index(r[0]) for r in raw["answers"]])
    predictions[2] = (predictions[2] + 1) % len(splits.labels)  # wrong on the bad row: not counted
    compute = make_compute_metrics(raw["answers"], None, dict(enumerate(splits.labels)), lambda: excluded)
    metrics = compute(type("P", (), {"predictions": predictions})())
    unfiltered = make_compute_metrics(raw["answers"], None, dict(enumerate(splits.labels)))
    control = unfiltered(type("P", (), {"predictions": predictions})())  # the same predictions, scored in full
    assert metrics["accuracy"] == pytest.approx(2 / 3) and metrics["excluded_bad_rows"] == 1.0  # as if all right
    assert control["accuracy"] == pytest.approx(7 / 8 * 2 / 3)
