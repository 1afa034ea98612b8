"""Data sources, validation errors, answer vocabulary, transform and collator."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_data import attach_vqa, make_imagefolder, make_parquet_hub_layout, make_vqav2_files, prepare_vqa

from mmft.data import DataError
from mmft.data import ImageTextCollator as VQACollator
from mmft.data.answers import answer_id, build_answer_vocab, soft_scores
from mmft.labels import IGNORE_INDEX
from mmft.processing_mmft import MMFTProcessor


@pytest.fixture(scope="module")
def processor():
    return MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32)


def _batch(splits, processor, n=4):
    attach_vqa(splits, processor)
    return VQACollator(processor.tokenizer)([splits.train[i] for i in range(n)])


def test_imagefolder_source_end_to_end_batch(tmp_path, processor):
    splits = prepare_vqa(make_imagefolder(tmp_path / "d"))
    assert (len(splits.train), len(splits.eval)) == (24, 8)
    assert sorted(splits.labels) == ["blue", "no", "red", "yes"]
    assert not splits.info["single_answer"]  # 3 annotator answers per row -> soft scores
    batch = _batch(splits, processor)
    assert batch["pixel_values"].shape == (4, 3, 32, 32)  # grayscale and RGBA rows included
    assert batch["labels"].dtype == torch.float32 and batch["labels"].sum(1).tolist() == [1.0] * 4


def test_hub_layout_with_column_mapping(tmp_path, processor):
    root = make_parquet_hub_layout(tmp_path / "hub")
    splits = prepare_vqa(root, spec={"image_column": "img"}, question_column="query", answers_column="label")
    assert splits.info["single_answer"] and len(splits.eval) == 8
    assert _batch(splits, processor)["labels"].dtype == torch.int64
    with pytest.raises(DataError, match="no column 'question'.*--question_column"):
        prepare_vqa(root, spec={"image_column": "img"}, answers_column="label")


def test_vqav2_files(tmp_path, processor):
    paths = make_vqav2_files(tmp_path)
    (q, a, d), (eq, ea, ed) = paths["train"], paths["val"]
    splits = prepare_vqa(
        "vqav2",
        questions_file=q,
        annotations_file=a,
        image_dir=d,
        eval_questions_file=eq,
        eval_annotations_file=ea,
        eval_image_dir=ed,
    )
    assert len(splits.train["answers"][0]) == 10 and len(splits.eval) == 8
    assert _batch(splits, processor)["labels"].max() == 1.0


def test_easy_vqa_source_counts():
    from mmft.data import load_easy_vqa

    data = load_easy_vqa()
    assert (len(data["train"]), len(data["test"])) == (38575, 9673)
    assert set(data["test"]["question_type"]) == {"yes/no", "color", "shape"}


def _rewrite_first_line(path, **changes):
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    record.update(changes)
    for key, value in list(record.items()):
        if value is None:
            del record[key]
    lines[0] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"file_name": "missing.png"}, r"row 0, file .*missing.png: image file not found"),
        ({"question": "   "}, r"row 0, file .*0.png: empty question"),
        ({"answers": []}, r"row 0, file .*0.png: 'answers' is empty"),
        ({"question": None}, r"metadata.jsonl, line 1: missing field 'question'"),
        ({"answers": None}, r"line 1: missing field 'answers' or 'answer'"),
    ],
)
def test_bad_rows_are_named_before_training(tmp_path, change, message):
    root = make_imagefolder(tmp_path / "d")
    _rewrite_first_line(root / "train" / "metadata.jsonl", **change)
    with pytest.raises(DataError, match=message):
        prepare_vqa(root)


def test_corrupt_image_is_named_when_decoded(tmp_path, processor):
    root = make_imagefolder(tmp_path / "d")
    image = root / "train" / "0.png"
    image.write_bytes(image.read_bytes()[:-40])  # header intact, pixel data cut: found only when decoded
    splits = prepare_vqa(root)
    attach_vqa(splits, processor)
    with pytest.raises(DataError, match=r"split 'train', row 0: cannot decode image .*0.png \(OSError"):
        splits.train[0]


def test_unknown_split_lists_the_available_ones(tmp_path):
    root = make_imagefolder(tmp_path / "d")
    with pytest.raises(DataError, match=r"no test split 'dev'; available splits: \['test', 'train'\]"):
        prepare_vqa(root, spec={"eval_split": "dev"})


def test_answer_vocab_and_label_encoding():
    vocab = build_answer_vocab([["Two"], ["2"], ["yes"], ["the dog"], ["dog"], ["dog"]], top_k=3)
    assert vocab == ["dog", "2", "yes"]  # normalised, by frequency, ties alphabetical
    label2id = {a: i for i, a in enumerate(vocab)}
    scores = soft_scores(["dog"] * 2 + ["2"] * 8, label2id)
    assert scores.tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    assert answer_id(["cat"], label2id) == IGNORE_INDEX
