"""`--streaming` data, in one process: readers, targets from the head rows, checks on the fly, node split, position.

The e2e runs through `accelerate launch` (2 processes, a killed and resumed run) are in tests/test_streaming_e2e.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers_data import attach_vqa, make_imagefolder, make_parquet_hub_layout, make_webdataset, prepare_vqa

from mmft.arguments import parse_recipe_args
from mmft.data import BadExamplePolicy, DataError
from mmft.data.collator import ROW_KEY
from mmft.data.streaming import FRACTION_FLOOR, TrainStream
from mmft.processing_mmft import MMFTProcessor

STREAM = {"streaming": True}
KEYS = {f"train-{s:05d}.tar/s{s}_{i}" for s in range(4) for i in range(6)}


@pytest.fixture(scope="module")
def processor():
    return MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=32)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_webdataset(tmp_path_factory.mktemp("wds") / "data")


def _keys(stream: TrainStream) -> list[str]:
    return [example[ROW_KEY] for example in stream]


def _stream(root, processor, policy=None, spec=None, **task_args) -> TrainStream:
    data = prepare_vqa(root, policy, spec={**STREAM, **(spec or {})}, **task_args)
    attach_vqa(data, processor, policy)
    return data


def test_webdataset_stream_gives_transformed_examples_and_targets_from_the_head(shards, processor):
    data = _stream(shards, processor)
    assert isinstance(data.train, TrainStream) and data.train.n_shards == 4
    assert sorted(data.labels) == ["blue", "no", "red", "yes"] and len(data.eval) == 8  # eval held in memory
    examples = list(data.train)
    assert {e[ROW_KEY] for e in examples} == KEYS and len(examples) == 24
    assert examples[0]["pixel_values"].shape == (3, 32, 32) and len(examples[0]["labels"]) == 4  # soft scores
    assert data.eval.with_format(None)["question"][0] == "what color is the shape?"


@pytest.mark.parametrize("n_shards", [4, 3])
def test_processes_read_every_row_exactly_once(tmp_path, processor, n_shards):
    """4 shards / 2 processes: whole shards each; 3 shards: every process reads all and keeps every 2nd row."""
    data = _stream(make_webdataset(tmp_path / "d", n_shards=n_shards), processor)
    seen = []
    for rank in range(2):
        data.train.split_by_node(rank, 2)
        seen.append(_keys(data.train))
    assert Counter(seen[0] + seen[1]) == Counter(
        {f"train-{s:05d}.tar/s{s}_{i}": 1 for s in range(n_shards) for i in range(6)}
    )
    if n_shards == 4:
        assert {k.split("/")[0] for k in seen[0]} == {"train-00000.tar", "train-00002.tar"}
    # negative control: without the split, both processes read everything
    data.train.split_by_node(0, 1)
    assert len(_keys(data.train)) == 6 * n_shards


def test_position_restores_mid_stream_and_across_a_pass(shards, processor):
    data = _stream(shards, processor)
    stream = data.train
    stream.set_epoch(2)  # a later pass: datasets reshuffles the shard order per pass (pass 1 of 4 shards keeps it)
    later_pass = _keys(stream)
    assert later_pass != _keys(_reset(stream, 0))  # the pass number matters, so it must be restored
    stream.set_epoch(2)
    iterator, head = iter(stream), []
    for _ in range(10):
        head.append(next(iterator)[ROW_KEY])
    state, epoch = stream.state_dict(), stream.epoch
    resumed = _stream(shards, processor).train
    resumed.epoch_offset = epoch  # what StreamingTrainer does: the Trainer restarts its pass count at 0
    resumed.set_epoch(0)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # as saved in the checkpoint
    assert head + _keys(resumed) == later_pass
    fresh = _stream(shards, processor).train  # negative control: no restored state
    fresh.epoch_offset = epoch
    fresh.set_epoch(0)
    assert head + _keys(fresh) != later_pass
    no_offset = _stream(shards, processor).train  # negative control: the state, but not its pass number
    no_offset.set_epoch(0)
    no_offset.load_state_dict(state)
    assert head + _keys(no_offset) != later_pass


def _reset(stream: TrainStream, epoch: int) -> TrainStream:
    stream.set_epoch(epoch)
    return stream


def test_bad_rows_raise_with_shard_and_key(tmp_path, processor):
    root = make_webdataset(tmp_path / "d", bad={"s0_1": "empty_question"})
    with pytest.raises(DataError, match=r"row train-00000.tar/s0_1, file s0_1.png: empty question"):
        _stream(root, processor, BadExamplePolicy("raise"))  # a bad row among the head rows stops before training
    root = make_webdataset(tmp_path / "e", bad={"s3_4": "not_an_image"})
    data = _stream(root, processor, BadExamplePolicy("raise"), spec={"streaming_head_rows": 5})
    with pytest.raises(DataError, match=r"row train-00003.tar/s3_4, file s3_4.png: cannot read image"):
        list(data.train)  # past the head rows: found on the fly


def test_skip_records_streamed_rows_and_goes_on(tmp_path, processor):
    root = make_webdataset(tmp_path / "d", bad={"s1_2": "empty_question", "s2_3": "not_an_image"})
    policy = BadExamplePolicy("skip", 0.5, str(tmp_path / "rejects.jsonl"))
    keys = _keys(_stream(root, processor, policy).train)
    assert set(keys) == KEYS - {"train-00001.tar/s1_2", "train-00002.tar/s2_3"}
    ledger = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert {(r["row"], r["stage"]) for r in ledger} == {
        ("train-00001.tar/s1_2", "stream"),
        ("train-00002.tar/s2_3", "stream"),
    }


def test_max_bad_fraction_judges_the_rows_a_process_has_read(tmp_path, processor):
    bad = {f"s{s}_{i}": "empty_question" for s in range(4) for i in range(2)}  # 8 of 24 rows
    root = make_webdataset(tmp_path / "d", bad=bad)
    spec = {"streaming_head_rows": 24}
    limit = 7 / FRACTION_FLOOR  # 8 bad rows > 7% of max(24 read, 100)
    with pytest.raises(DataError, match=r"8 of the \d+ rows of split 'train' this process has streamed are bad"):
        list(_stream(root, processor, BadExamplePolicy("skip", limit), spec).train)
    # control: one bad row more is allowed and the stream is read to the end
    assert len(_keys(_stream(root, processor, BadExamplePolicy("skip", 8 / FRACTION_FLOOR), spec).train)) == 16


def test_parquet_folder_streams_with_column_mapping(tmp_path, processor):
    root = make_parquet_hub_layout(tmp_path / "hub")
    data = _stream(root, processor, spec={"image_column": "img"}, question_column="query", answers_column="label")
    assert data.info["single_answer"] and len(data.eval) == 8
    keys = _keys(data.train)
    assert len(keys) == 24 and len(set(keys)) == 24 and keys[0] == "p0-w0-0"  # no sample keys: named by position
    with pytest.raises(DataError, match="no column 'question'.*--question_column"):
        prepare_vqa(root, spec={**STREAM, "image_column": "img"}, answers_column="label")


def test_imagefolder_streams_through_load_dataset(tmp_path, processor):
    data = _stream(make_imagefolder(tmp_path / "d"), processor)
    assert len(_keys(data.train)) == 24 and sorted(data.labels) == ["blue", "no", "red", "yes"]


def test_classification_label_outside_the_head_vocabulary_is_a_bad_row(tmp_path, processor):
    from mmft.data import SourceSpec
    from mmft.tasks.classification.task import ClassificationArguments, ClassificationTask

    make_imagefolder(tmp_path / "d")
    for split in ("train", "test"):  # VQA rows as (text, label) rows; training rows 20-23 get a new label
        table = tmp_path / "d" / split / "metadata.jsonl"
        rows = [json.loads(line) for line in table.read_text().splitlines()]
        for i, row in enumerate(rows):
            answer = row.pop("answers")[0]
            row.update(text=row.pop("question"), label=answer if split == "test" or i < 20 else "green")
        table.write_text("".join(json.dumps(row) + "\n" for row in rows))

    task = ClassificationTask(ClassificationArguments())
    data = task.prepare_data(SourceSpec(str(tmp_path / "d"), streaming=True, streaming_head_rows=20))
    task.attach(data, processor)
    with pytest.raises(DataError, match=r"labels \['green'\] are not in the label vocabulary.*--class_names"):
        list(data.train)
    data = task.prepare_data(SourceSpec(str(tmp_path / "d"), streaming=True))  # control: all rows in the head
    task.attach(data, processor)
    assert len(list(data.train)) == 24


def test_streaming_needs_max_steps_at_argument_parsing():
    with pytest.raises(ValueError, match="--streaming needs --max_steps"):
        parse_recipe_args(["--streaming", "true"], "vqa")
    with pytest.raises(ValueError, match="--max_train_samples does not apply to --streaming"):
        parse_recipe_args(["--streaming", "true", "--max_steps", "5", "--max_train_samples", "10"], "vqa")
    args = parse_recipe_args(["--streaming", "true", "--max_steps", "5"], "vqa")
    assert args.data.streaming and args.training.max_steps == 5


@pytest.mark.parametrize("task", ["retrieval", "captioning"])
def test_streaming_is_refused_at_parsing_for_tasks_that_expand_caption_pairs(task, capsys):
    """Their training rows are (image, caption) pairs made from each image's captions, which the stream does not
    expand (it ended in `KeyError: 'caption'` inside the first training batch)."""
    from mmft.training import main

    flags = ["--streaming", "true", "--max_steps", "2"]
    with pytest.raises(ValueError, match=rf"--streaming is not available for {task}: .*drop --streaming"):
        parse_recipe_args(flags, task)
    assert main(task, flags) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"mmft: --streaming is not available for {task}") and "Traceback" not in error
    assert not parse_recipe_args(flags[:1] + ["false"], task).data.streaming  # control: without it, parsed
