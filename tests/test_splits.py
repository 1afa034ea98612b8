"""Three-way splits: train on train, select on validation, score test once at the end on the selected model.

Carving (a dataset without a validation or test split) is grouped by image, fixed by the seed and said in the log;
the negative control cuts by row instead and puts an image in two splits. End to end on tiny towers: a folder with
only a train split trains, selects the best checkpoint by the task's main metric (the final model is that
checkpoint's, not the last one's), stops early, and retrieval and captioning report their main metric at an
evaluation during training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from datasets import Image
from helpers_data import COLOURS, make_caption_folder, make_imagefolder, prepare_vqa, write_image
from helpers_launch import run_in_process, run_task_recipe, tiny_tower_flags
from safetensors.torch import load_file
from transformers import TrainerCallback

from mmft.data import DataError
from mmft.data.sources import SourceSpec
from mmft.data.splits import carve, choose_splits, image_keys

REPO = Path(__file__).resolve().parents[1]
N_IMAGES, QUESTIONS_PER_IMAGE = 30, 3


def make_train_only_folder(root: Path, n_images: int = N_IMAGES) -> Path:
    """An imagefolder with only `train/`: each image is asked `QUESTIONS_PER_IMAGE` questions (rows share images)."""
    folder = root / "train"
    folder.mkdir(parents=True)
    with (folder / "metadata.jsonl").open("w") as handle:
        for i in range(n_images):
            colour = tuple(COLOURS)[i % 2]
            write_image(folder / f"{i}.png", colour)
            questions = {
                "what color is the shape?": colour,
                "is the shape red?": "yes" if colour == "red" else "no",
                "is the shape blue?": "yes" if colour == "blue" else "no",
            }
            for question, answer in list(questions.items())[:QUESTIONS_PER_IMAGE]:
                record = {"file_name": f"{i}.png", "question": question, "answers": [answer] * 4}
                handle.write(json.dumps(record) + "\n")
    return root


def image_names(split) -> set[str]:
    images = split.cast_column("image", Image(decode=False)).with_format(None)["image"]
    return {Path(image["path"]).name for image in images}


def questions(split) -> list[tuple[str, str]]:
    raw = split.with_format(None)
    return [(Path(image["path"]).name, q) for image, q in zip(raw["image"], raw["question"])]


@pytest.fixture(scope="module")
def train_only(tmp_path_factory) -> Path:
    return make_train_only_folder(tmp_path_factory.mktemp("splits") / "train_only")


# -- carving --------------------------------------------------------------------------------------------------------
def test_train_only_data_gets_validation_and_test_carved_by_image_and_logged(train_only, caplog):
    with caplog.at_level(logging.WARNING, logger="mmft.data"):
        data = prepare_vqa(train_only, spec={"validation_split_percentage": 20}, validation=True)
    splits = {"train": data.train, "validation": data.validation, "test": data.eval}
    images = {name: image_names(split) for name, split in splits.items()}
    assert {name: len(names) for name, names in images.items()} == {"train": 18, "validation": 6, "test": 6}
    for first, second in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not images[first] & images[second], (first, second)  # no image in two splits
    assert sum(len(split) for split in splits.values()) == N_IMAGES * QUESTIONS_PER_IMAGE  # no row lost
    assert all(len(split) == 3 * len(images[name]) for name, split in splits.items())  # each image's every row
    assert "has no test or validation split: carved test (18 rows) and validation (18 rows)" in caplog.text
    assert "grouped by image" in caplog.text and "--seed 42" in caplog.text
    again = prepare_vqa(train_only, spec={"validation_split_percentage": 20}, validation=True)
    for name, split in (("train", again.train), ("validation", again.validation), ("test", again.eval)):
        assert questions(split) == questions(splits[name]), name  # the same rows, in the same order
    other_seed = prepare_vqa(train_only, spec={"validation_split_percentage": 20}, validation=True, seed=7)
    assert image_names(other_seed.eval) != images["test"]  # the cut is the seed's


def test_negative_control_a_cut_by_row_puts_images_in_two_splits(train_only):
    from mmft.data.sources import load_local
    from mmft.tasks.vqa.task import VQATask

    train = load_local(train_only, VQATask.columns, {}, "image")["train"]
    by_row = carve(train, [0.2], seed=42, keys=[str(row) for row in range(len(train))])
    assert image_names(by_row[0]) & image_names(by_row[1])  # rows of one image on both sides
    by_image = carve(train, [0.2], seed=42)
    assert not image_names(by_image[0]) & image_names(by_image[1])
    assert carve(train, [0.2], seed=42, keys=image_keys(train))[0]["question"] == by_image[0]["question"]


def test_an_image_held_as_bytes_is_grouped_by_its_content():
    from datasets import Dataset, Features, Value

    blank, other = b"\x89PNG same bytes", b"\x89PNG other bytes"
    data = Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in (blank, other, blank)], "q": ["a", "b", "c"]},
        features=Features({"image": Image(decode=False), "q": Value("string")}),
    )
    keys = image_keys(data)
    assert keys[0] == keys[2] != keys[1] and keys[0].startswith("sha256:")


def test_a_run_that_never_evaluates_keeps_train_and_test_as_they_are(tmp_path, caplog):
    root = make_imagefolder(tmp_path / "d", n_train=24, n_test=8)
    with caplog.at_level(logging.WARNING, logger="mmft.data"):
        data = prepare_vqa(root)
    assert (len(data.train), len(data.eval), data.validation) == (24, 8, None)  # the demo preset's case
    assert "carved" not in caplog.text
    only_test = prepare_vqa(make_train_only_folder(tmp_path / "t"))  # train only, no evaluation: test carved only
    assert only_test.validation is None and len(only_test.eval) + len(only_test.train) == N_IMAGES * 3
    assert not image_names(only_test.eval) & image_names(only_test.train)


def test_validation_is_carved_from_train_when_the_data_has_train_and_test(tmp_path):
    root = make_imagefolder(tmp_path / "d", n_train=40, n_test=8)
    data = prepare_vqa(root, spec={"validation_split_percentage": 25})  # asked for, though the run never evaluates
    assert (len(data.train), len(data.validation), len(data.eval)) == (30, 10, 8)  # test untouched
    assert not image_names(data.train) & image_names(data.validation)
    default = prepare_vqa(root, validation=True)  # a run that evaluates: 10% by default
    assert (len(default.train), len(default.validation), len(default.eval)) == (36, 4, 8)


def test_named_splits_are_used_and_a_missing_one_is_a_clear_error(tmp_path):
    root = make_imagefolder(tmp_path / "d", n_train=24, n_test=8)
    with pytest.raises(DataError, match=r"no validation split 'dev'; available splits: \['test', 'train'\]\. Name"):
        prepare_vqa(root, spec={"validation_split": "dev"})
    with pytest.raises(DataError, match=r"--validation_split 'test' is also the test split"):
        prepare_vqa(root, spec={"validation_split": "test", "eval_split": "test"})
    with pytest.raises(DataError, match=r"--validation_split_percentage must be above 0 and below 50, got 60"):
        prepare_vqa(root, spec={"validation_split_percentage": 60})
    spec = SourceSpec(dataset="x")
    assert choose_splits(spec, ["train", "validation", "test"], validation=True)[1:] == ("validation", "test", False)
    assert choose_splits(spec, ["train", "dev"], validation=False)[1:] == (None, "dev", False)  # scored, not selected
    assert choose_splits(spec, ["train", "dev"], validation=True)[1:] == ("dev", None, False)  # test carved
    named = make_imagefolder(tmp_path / "named", n_train=24, n_test=8)
    (named / "test").rename(named / "dev")
    data = prepare_vqa(named, spec={"validation_split": "dev"}, validation=True)
    assert len(data.validation) == 8 and len(data.eval) + len(data.train) == 24  # test carved from train


# -- model selection, end to end --------------------------------------------------------------------------------------
class RiggedScores(TrainerCallback):
    """Replaces the selection metric of each evaluation by the next of `scores`, so the best checkpoint is known
    (and is not the last one) whatever the tiny model learns."""

    def __init__(self, key: str, scores: list[float]) -> None:
        self.key, self.scores, self.seen = key, list(scores), []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.seen.append(metrics[self.key])  # the real value, computed on the validation split
        metrics[self.key] = self.scores[len(self.seen) - 1]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _checkpoint_steps(output: Path) -> list[int]:
    return sorted(int(path.name.split("-")[1]) for path in output.glob("checkpoint-*"))


def _last_state(output: Path) -> dict:
    folder = output / f"checkpoint-{_checkpoint_steps(output)[-1]}"
    return json.loads((folder / "trainer_state.json").read_text())


def test_load_best_model_at_end_keeps_the_checkpoint_best_by_the_main_metric(train_only, tmp_path, tiny_text_dir):
    output = tmp_path / "out"
    rigged = RiggedScores("eval_accuracy", [0.2, 0.9, 0.5])
    metrics = run_in_process(
        output,
        tiny_text_dir,
        train_only,
        *("--num_train_epochs", "3", "--per_device_train_batch_size", "8", "--validation_split_percentage", "20"),
        *("--eval_strategy", "epoch", "--save_strategy", "epoch", "--load_best_model_at_end", "true"),
        *("--save_total_limit", "3", "--seed", "42"),
        callbacks=[rigged],
    )
    assert len(rigged.seen) == 3 and all(0.0 <= value <= 1.0 for value in rigged.seen)  # VQA accuracy was computed
    state, steps = _last_state(output), _checkpoint_steps(output)
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{steps[1]}") and state["best_metric"] == 0.9
    final = _weights(output)
    best, last = _weights(output / f"checkpoint-{steps[1]}"), _weights(output / f"checkpoint-{steps[-1]}")
    assert all(torch.equal(final[key], best[key]) for key in best)  # the best checkpoint's weights, loaded strictly
    assert not all(torch.equal(final[key], last[key]) for key in last)  # negative control: not the last ones
    evals = [entry for entry in state["log_history"] if "eval_accuracy" in entry]
    assert [entry["eval_accuracy"] for entry in evals] == rigged.seen  # logged as computed, before the rigging
    assert {"test_accuracy", "test_loss"} <= set(metrics) and not any(k.startswith("eval_") for k in metrics)
    rows = (output / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 18  # the carved test split (6 images x 3 questions), scored once


def test_early_stopping_stops_after_patience_evaluations_without_improvement(train_only, tmp_path, tiny_text_dir):
    output = tmp_path / "out"
    rigged = RiggedScores("eval_accuracy", [0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    run_in_process(
        output,
        tiny_text_dir,
        train_only,
        *("--num_train_epochs", "6", "--per_device_train_batch_size", "16", "--early_stopping_patience", "2"),
        *(
            "--eval_strategy",
            "epoch",
            "--save_strategy",
            "epoch",
            "--max_train_samples",
            "32",
            "--save_total_limit",
            "9",
        ),
        callbacks=[rigged],
    )
    assert len(rigged.seen) == 3  # epoch 1 sets the best; 2 and 3 do not improve: stopped, 3 epochs early
    state = _last_state(output)
    assert state["epoch"] == 3.0 and (output / "test_results.json").is_file()


def test_early_stopping_needs_evaluations(train_only, tmp_path, tiny_text_dir, capsys):
    with pytest.raises(ValueError, match=r"--early_stopping_patience 2: needs .* --eval_strategy steps or epoch"):
        run_in_process(
            tmp_path / "out", tiny_text_dir, train_only, "--max_steps", "1", "--early_stopping_patience", "2"
        )
    # From the command line it is a user's mistake, refused while parsing: exit 2, one sentence, nothing written.
    from mmft.training import main

    argv = ["--dataset", str(train_only), "--output_dir", str(tmp_path / "cli"), "--early_stopping_patience", "2"]
    assert main("vqa", [*argv, "--eval_strategy", "no"]) == 2
    assert (
        capsys.readouterr().err.startswith("mmft: --early_stopping_patience 2: needs")
        and not (tmp_path / "cli").exists()
    )


# -- retrieval and captioning report their main metric during training ------------------------------------------------
def _eval_entries(output: Path) -> list[dict]:
    state = _last_state(output)
    return [entry for entry in state["log_history"] if "eval_loss" in entry]


def test_retrieval_reports_rsum_at_each_evaluation_and_selects_by_it(tmp_path, tiny_text_dir):
    data = make_caption_folder(tmp_path / "captions", n_train=24, n_test=8)
    output = tmp_path / "out"
    argv = [
        "--dataset",
        str(data),
        *tiny_tower_flags(tiny_text_dir),
        *("--rerank_k", "4", "--max_steps", "4", "--per_device_train_batch_size", "8"),
        *("--per_device_eval_batch_size", "8", "--eval_strategy", "steps", "--eval_steps", "2"),
        *(
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
            "--load_best_model_at_end",
            "true",
            "--save_total_limit",
            "3",
        ),
        *("--disable_tqdm", "true", "--output_dir", str(output)),
    ]
    metrics = run_task_recipe("retrieval", argv, REPO / "recipes" / "configs" / "scenes_retrieval.yaml")
    entries = _eval_entries(output)
    assert len(entries) == 2
    for entry in entries:
        assert {"eval_rerank_rsum", "eval_dual_rsum", "eval_rerank_t2i_recall@1", "eval_num_images"} <= set(entry)
        assert entry["eval_num_images"] == 3  # the carved validation split: 10% of 24 images, rounded up
    state = _last_state(output)
    assert state["best_metric"] == max(entry["eval_rerank_rsum"] for entry in entries)
    assert metrics["test_num_images"] == 8 and "test_rerank_rsum" in metrics


def test_captioning_reports_cider_at_an_evaluation_during_training(tmp_path, tiny_text_dir):
    from helpers_captioning import save_tiny_decoder

    data = make_caption_folder(tmp_path / "captions", n_train=24, n_test=8)
    output = tmp_path / "out"
    argv = [
        "--dataset",
        str(data),
        *tiny_tower_flags(tiny_text_dir),
        *("--decoder_model", str(save_tiny_decoder(tmp_path / "decoder")), "--num_query_tokens", "2"),
        *("--max_steps", "2", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4"),
        *("--max_new_tokens", "4", "--max_eval_samples", "3", "--eval_strategy", "steps", "--eval_steps", "2"),
        *("--save_strategy", "steps", "--save_steps", "2", "--validation_split", "test", "--eval_split", "test"),
    ]
    with pytest.raises(DataError, match="also the test split"):
        run_task_recipe(
            "captioning", [*argv, "--output_dir", str(output)], REPO / "recipes/configs/scenes_captioning.yaml"
        )
    argv = argv[: argv.index("--validation_split")]
    run_task_recipe(
        "captioning", [*argv, "--output_dir", str(output)], REPO / "recipes" / "configs" / "scenes_captioning.yaml"
    )
    (entry,) = _eval_entries(output)
    assert {"eval_cider", "eval_bleu_4", "eval_rouge_l"} <= set(entry)
    assert not any("baseline" in key for key in entry)  # the baselines are scored at the end only
    results = json.loads((output / "test_results.json").read_text())
    assert "test_cider" in results and "test_cider_baseline_nearest" in results


def test_selection_metric_is_the_tasks_main_metric_unless_one_is_named():
    from mmft.arguments import parse_recipe_args
    from mmft.selection import select_by_main_metric
    from mmft.tasks import get_task

    expected = {
        ("vqa", ()): "eval_accuracy",
        ("classification", ()): "eval_accuracy",
        ("classification", ("--multi_label", "true")): "eval_f1_macro",
        ("retrieval", ()): "eval_rerank_rsum",
        ("retrieval", ("--rerank_k", "0")): "eval_dual_rsum",
        ("captioning", ()): "eval_cider",
    }
    selection = ("--eval_strategy", "epoch", "--save_strategy", "epoch", "--load_best_model_at_end", "true")
    for (task, flags), metric in expected.items():
        args = parse_recipe_args([*selection, *flags], task)
        assert args.training.metric_for_best_model == "loss"  # transformers' fill-in when none is named
        select_by_main_metric(get_task(task)(args.task), args)
        assert (args.training.metric_for_best_model, args.training.greater_is_better) == (metric, True), task
    named = parse_recipe_args([*selection, "--metric_for_best_model", "eval_loss"], "vqa")
    select_by_main_metric(get_task("vqa")(named.task), named)
    assert (named.training.metric_for_best_model, named.training.greater_is_better) == ("eval_loss", False)
    plain = parse_recipe_args([], "vqa")  # no selection asked: nothing set (the demo preset)
    select_by_main_metric(get_task("vqa")(plain.task), plain)
    assert plain.training.metric_for_best_model is None
