"""Caption data (retrieval and captioning): Karpathy-split and COCO JSON files, imagefolder rows, bad captions."""

from __future__ import annotations

import json

import pytest
from helpers_data import write_image

from mmft.data import BadExamplePolicy, DataError, SourceSpec
from mmft.data.captions import CAPTIONS, CaptionDataArguments, caption_datasets
from mmft.tasks.base import prepare_splits


def _karpathy(tmp_path, sentences_of_first=None):
    images = tmp_path / "images" / "val2014"
    images.mkdir(parents=True)
    entries = []
    for i, split in enumerate(["train", "restval", "val", "test", "test"]):
        write_image(images / f"{i}.jpg", ("red", "blue")[i % 2])
        sentences = [{"raw": f"a {('red', 'blue')[i % 2]} square", "tokens": []}, {"raw": "a square on white"}]
        entries.append({"filepath": "val2014", "filename": f"{i}.jpg", "split": split, "sentences": sentences})
    if sentences_of_first is not None:
        entries[0]["sentences"] = sentences_of_first
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return CaptionDataArguments(captions_file=str(path), image_dir=str(tmp_path / "images"))


def _prepare(files, policy=None, **spec):
    """(train, test) of a run that never evaluates during training (so it has no validation split)."""
    splits = prepare_splits(
        SourceSpec(dataset="coco_json", **spec), (CAPTIONS,), {}, caption_datasets(files), policy=policy
    )
    return splits.train, splits.test


def test_karpathy_json_splits_restval_into_train_and_keeps_every_caption(tmp_path):
    train, test = _prepare(_karpathy(tmp_path))
    assert (len(train), len(test)) == (2, 2)  # train + restval; test (validation is the third split)
    assert train[0]["captions"] == ["a red square", "a square on white"]
    assert train.with_format(None)[1]["image"]["path"].endswith("val2014/1.jpg")


def test_coco_captions_json_groups_annotations_per_image(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(3):
        write_image(tmp_path / "img" / f"{i}.jpg", "red")
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(3)],
        "annotations": [{"image_id": i % 3, "caption": f"caption {i}"} for i in range(7)],
    }
    (tmp_path / "train.json").write_text(json.dumps(data))
    (tmp_path / "val.json").write_text(json.dumps(data))
    files = CaptionDataArguments(
        captions_file=str(tmp_path / "train.json"),
        eval_captions_file=str(tmp_path / "val.json"),
        image_dir=str(tmp_path / "img"),
    )
    train, evaluation = _prepare(files)
    assert train["captions"][0] == ["caption 0", "caption 3", "caption 6"] and len(evaluation) == 3


@pytest.mark.parametrize(
    "sentences, message",
    [
        ([], r"'captions' is empty; every row needs >= 1 caption"),
        ([{"raw": "   "}], r"'captions' item 0 is an empty caption"),
        ([{"raw": {"text": "x"}}], r"'captions' item 0 is missing or not text \(null\)"),
    ],
)
def test_bad_captions_name_the_row_or_are_skipped(tmp_path, sentences, message):
    files = _karpathy(tmp_path, sentences_of_first=sentences)
    with pytest.raises(DataError, match=r"split 'train', row 0, file .*0.jpg: " + message):
        _prepare(files)
    policy = BadExamplePolicy("skip", max_bad_fraction=0.6, source="coco_json")
    train, _ = _prepare(files, policy=policy)
    assert len(train) == 1 and list(policy.rejected("train")) == [0]


def test_caption_json_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="needs --captions_file and --image_dir"):
        _prepare(CaptionDataArguments())
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad.json: not a valid JSON file"):
        _prepare(CaptionDataArguments(captions_file=str(tmp_path / "bad.json"), image_dir=str(tmp_path)))
