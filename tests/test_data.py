"""Data sources, validation errors, answer vocabulary, transform and collator."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_data import attach_vqa, make_imagefolder, make_parquet_hub_layout, make_vqav2_files, prepare_vqa

from mmft.data import DataError
from mmft.data import ImageTextCollator as VQACollator
from mmft.labels import IGNORE_INDEX
from mmft.processing_mmft import MMFTProcessor
from mmft.tasks.vqa.answers import answer_id, build_answer_vocab, soft_scores


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


# -- data as users have it: list cells, relative image paths, Hub configurations, a split column ---------------------
def test_vqa_csv_answer_cells_hold_json_lists_or_bar_separated_answers(tmp_path, processor):
    from helpers_data import make_vqa_answer_lists_csv

    splits = prepare_vqa(make_vqa_answer_lists_csv(tmp_path / "d", n_train=8, n_test=4))
    assert splits.train["answers"][:4] == [
        ["red", "red", "maybe"],
        ["blue", "blue", "maybe"],
        ["yes", "yes", "maybe"],
        ["no"],
    ]
    assert splits.train["question"][0] == "what color is the shape? (a|b)"  # a question is never split
    assert not splits.info["single_answer"]  # several answers per row: VQAv2 soft scores
    labels = _batch(splits, processor)["labels"]
    vocabulary = {answer: i for i, answer in enumerate(splits.labels)}
    assert labels[0, vocabulary["red"]] == pytest.approx(2 / 3) and labels[0, vocabulary["maybe"]] == pytest.approx(
        1 / 3
    )
    assert labels[3, vocabulary["no"]] == 1.0 and labels[3].sum() == 1.0  # a plain cell is one answer


def test_list_cells_are_split_only_where_the_column_declares_how():
    from mmft.data import TEXT, TEXTS, Column
    from mmft.tasks.vqa.task import ANSWERS, QUESTION

    assert ANSWERS.canonical('["red", "red", "blue"]') == ["red", "red", "blue"]
    assert ANSWERS.canonical("red|red | blue") == ["red", "red", "blue"]
    assert ANSWERS.canonical("red") == ["red"] and ANSWERS.canonical(["a|b"]) == ["a|b"]  # a list is kept as given
    assert ANSWERS.canonical("[not json") == ["[not json"]
    assert ANSWERS.problem(ANSWERS.canonical("red||blue")) == "'answers' item 1 is an empty answer"
    assert QUESTION.canonical("a|b") == "a|b" and Column("t", TEXTS).canonical('["a"]') == ['["a"]']
    with pytest.raises(ValueError, match="a 'text' column holds one string"):
        Column("q", TEXT, separator="|")


def test_relative_image_paths_resolve_against_image_root(tmp_path):
    root = make_parquet_hub_layout(tmp_path / "hub", n_train=8, n_test=4, relative_paths=True)
    images = tmp_path / "hub_images"
    mapping = {"question_column": "query", "answers_column": "label"}
    splits = prepare_vqa(root, spec={"image_column": "img", "image_root": str(images)}, **mapping)
    assert splits.train.with_format(None)[0]["image"]["path"] == str(images / "train_0.png")
    with pytest.raises(DataError, match=r"split 'train', row 0, file train_0.png: image file not found"):
        prepare_vqa(root, spec={"image_column": "img"}, **mapping)  # relative to the working directory: not there
    # A local table folder: its images resolve against its own folder, or against --image_root.
    table = tmp_path / "table"
    table.mkdir()
    lines = [json.dumps({"image": f"train_{i}.png", "question": "q?", "answer": "red"}) for i in range(2)]
    for split in ("train", "test"):
        (table / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    from datasets import Image

    from mmft.data import SourceSpec, load_splits
    from mmft.tasks.vqa.task import ANSWERS, QUESTION

    for spec, folder in (
        (SourceSpec(dataset=str(table), image_root=str(images)), images),
        (SourceSpec(dataset=str(table)), table),
    ):
        train = load_splits(spec, (QUESTION, ANSWERS)).train
        assert train.cast_column("image", Image(decode=False))[1]["image"]["path"] == str(folder / "train_1.png")


def test_hub_configuration_and_revision_reach_load_dataset(tmp_path, monkeypatch):
    from datasets import load_dataset

    from mmft.data import sources

    root = make_parquet_hub_layout(tmp_path / "hub", n_train=8, n_test=4)
    calls = []

    def recording(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return load_dataset(str(root))

    monkeypatch.setattr(sources, "load_dataset", recording)
    spec = {"image_column": "img", "dataset_config_name": "2014", "dataset_revision": "v1.0"}
    prepare_vqa("user/vqa", spec=spec, question_column="query", answers_column="label")
    assert calls == [("user/vqa", "2014", {"revision": "v1.0"})]


def test_a_split_column_partitions_the_loaded_rows_before_the_splits_are_chosen(tmp_path):
    from datasets import DatasetDict, load_dataset

    from mmft.data.splits import partition_by_column

    root = make_parquet_hub_layout(tmp_path / "hub", n_train=6, n_test=3)
    loaded = load_dataset(str(root))
    parts = partition_by_column(
        DatasetDict({name: data.rename_column("query", "part") for name, data in loaded.items()}), "part", "hub"
    )
    assert sorted(parts) == ["is the shape red?", "what color is the shape?"]  # the values of every split's rows
    assert sum(len(part) for part in parts.values()) == 9 and "part" not in parts["is the shape red?"].column_names
    # Through the loader: the column is carried from the source (a table here), partitioned, then dropped.
    table = tmp_path / "table"
    table.mkdir()
    rows = [
        {"file_name": f"train_{i}.png", "question": "q?", "answer": answer, "part": part}
        for i, (answer, part) in enumerate([("red", "train"), ("red", "test"), ("blue", "train")])
    ]
    (table / "all.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    splits = prepare_vqa(table, spec={"split_column": "part", "image_root": str(tmp_path / "hub_images")})
    assert (len(splits.train), len(splits.eval)) == (2, 1)
    with pytest.raises(DataError, match=r"dataset '.*hub', split 'train': no column 'split' \(--split_column\)"):
        prepare_vqa(
            root, spec={"image_column": "img", "split_column": "split"}, question_column="query", answers_column="label"
        )
    (table / "all.jsonl").write_text(json.dumps({**rows[0], "part": None}) + "\n")
    with pytest.raises(DataError, match=r"all.jsonl, line 1: missing field 'part'"):
        prepare_vqa(table, spec={"split_column": "part"})
    with pytest.raises(DataError, match="--split_column part partitions a loaded dataset, which a stream is not"):
        prepare_vqa(table, spec={"split_column": "part", "streaming": True})
