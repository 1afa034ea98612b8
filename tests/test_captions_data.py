"""Caption data (retrieval and captioning): Karpathy-split and COCO JSON files, imagefolder rows, bad captions."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from helpers_data import write_image

from mmft.data import BadExamplePolicy, DataError, SourceSpec
from mmft.data.captions import CAPTIONS, CaptionDataArguments, caption_datasets
from mmft.data.prepare import prepare_splits


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


# -- pair data as users have it --------------------------------------------------------------------------------------
def test_captioning_reads_a_flickr_csv_one_row_per_image_with_every_reference(tmp_path):
    from helpers_data import make_flickr_csv, pair_captions

    from mmft.tasks.captioning.task import CaptioningArguments, CaptioningTask

    root = make_flickr_csv(tmp_path / "flickr", n_train=3, n_test=4)
    data = CaptioningTask(CaptioningArguments()).prepare_data(SourceSpec(dataset=str(root)))
    assert len(data.eval) == 4 and data.eval["captions"] == [pair_captions(i) for i in range(4)]
    assert len(data.info["train_images"]) == 3 and len(data.train) == 15  # one training row per pair, as before
    assert data.train["caption_index"] == [0, 1, 2, 3, 4] * 3
    # Negative control: ungrouped, each eval image would be captioned 5 times, each against one reference.
    ungrouped = CaptioningTask(CaptioningArguments(group_by_image=False)).prepare_data(SourceSpec(dataset=str(root)))
    assert len(ungrouped.eval) == 20 and ungrouped.eval["captions"][:2] == [[c] for c in pair_captions(0)[:2]]


def test_group_by_image_merges_by_file_path_or_embedded_bytes_never_by_a_shared_name(tmp_path):
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    from mmft.data.captions import group_by_image

    write_image(tmp_path / "a.png", "red")
    write_image(tmp_path / "b.png", "blue")
    red, blue = (tmp_path / "a.png").read_bytes(), (tmp_path / "b.png").read_bytes()
    images = [
        {"path": str(tmp_path / "a.png"), "bytes": None},
        {"path": str(tmp_path / "sub" / ".." / "a.png"), "bytes": None},  # the same file, written differently
        {"path": "image.jpg", "bytes": red},  # embedded: the bytes decide, not the (repeated) name
        {"path": "image.jpg", "bytes": blue},
        {"path": None, "bytes": red},
        {"path": str(tmp_path / "b.png"), "bytes": None},
    ]
    features = Features(
        {"image": ImageFeature(decode=False), "captions": Sequence(Value("string")), "row": Value("int64")}
    )
    data = Dataset.from_dict(
        {"image": images, "captions": [[f"c{i}", "same"] for i in range(6)], "row": list(range(6))}, features=features
    )
    grouped = group_by_image(data)
    assert grouped["row"] == [0, 2, 3, 5]
    assert grouped["captions"] == [
        ["c0", "same", "c1", "same"],
        ["c2", "same", "c4", "same"],
        ["c3", "same"],
        ["c5", "same"],
    ]
    assert grouped.features["captions"] == features["captions"]
    assert group_by_image(grouped) is grouped  # one row per image already (COCO / Karpathy files): unchanged


def test_a_caption_cell_may_hold_a_json_list_but_is_never_split_on_a_bar(tmp_path):
    write_image(tmp_path / "0.png", "red")
    write_image(tmp_path / "1.png", "blue")
    rows = ["image,raw", '0.png,"[""a red square"", ""red | white""]"', "1.png,a blue square | on white"]
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    train = prepare_splits(SourceSpec(dataset=str(tmp_path)), (CAPTIONS,), {"captions": "raw"}).train
    assert train["captions"] == [["a red square", "red | white"], ["a blue square | on white"]]


def test_the_recipes_flickr30k_example_partitions_the_hub_layout_by_its_split_column(tmp_path):
    """recipes/retrieval.py's Flickr30k command as written, its Hub id replaced by a local parquet folder of the same
    layout: one `test` split of per-image rows whose `split` column names the Karpathy split."""
    import shlex
    from pathlib import Path

    from helpers_data import make_flickr_hub_layout, pair_captions

    from mmft.arguments import parse_recipe_args
    from mmft.tasks.retrieval.task import RetrievalTask

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "retrieval.py"
    lines = recipe.read_text().replace("\\\n", " ").splitlines()  # a command continued with a backslash is one line
    (line,) = [line for line in lines if "nlphuji/flickr30k" in line]
    argv = shlex.split(line.split("recipes/retrieval.py", 1)[1])
    root, images = make_flickr_hub_layout(tmp_path / "flickr30k", n_train=6, n_val=2, n_test=4)
    argv[argv.index("nlphuji/flickr30k")] = str(root)
    args = parse_recipe_args(argv, "retrieval", default_config=str(recipe.parent / "configs" / "scenes_retrieval.yaml"))
    data = RetrievalTask(args.task).prepare_data(args.data)
    assert len(data.eval) == 4 and sorted(data.eval["captions"]) == sorted(pair_captions(i) for i in range(4))
    assert data.eval.with_format(None)[0]["image"]["bytes"] is not None  # embedded, as on the Hub
    assert len(data.train) == 6 * 5 and len(set(data.train["image_id"])) == 6  # the train rows' pairs
    val = RetrievalTask(args.task).prepare_data(replace(args.data, eval_split="val"))
    assert len(val.eval) == 2
    with pytest.raises(DataError, match=r"no test split 'validation'; available splits: \['test', 'train', 'val'\]"):
        RetrievalTask(args.task).prepare_data(replace(args.data, eval_split="validation"))
