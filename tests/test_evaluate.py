"""`mmft evaluate`: a saved model scored on a dataset split as its training run scored its test split.

Each task's recipe trains tiny towers for a few steps (in this process); `mmft evaluate` then scores the saved folder
on the same split and must write the run's `test_results.json` again (same keys, same values but for timings) and
its `predictions.jsonl`, without writing into the model's own files. One data format per task (imagefolder, table
folder, Hub layout with mapped columns, coco_json, vqav2) keeps each run small.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from helpers_captioning import save_tiny_decoder
from helpers_data import make_caption_folder, make_imagefolder, make_parquet_hub_layout, write_image
from helpers_launch import PRESET, REPO, TIMING_KEYS, recipe_argv, run_task_recipe, tiny_tower_flags

from mmft.cli import main

pytestmark = pytest.mark.e2e
CONFIGS = REPO / "recipes" / "configs"


def _timing(key: str) -> bool:
    """A timing of the evaluation itself (the Trainer's, retrieval's per stage, captioning's generation): it differs
    between any two runs."""
    return key in TIMING_KEYS or key.endswith(("_seconds", "_per_second"))


RUN_FLAGS = ["--max_steps", "3", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]


def _files(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _evaluate(model: Path, *flags: str) -> int:
    return main(["evaluate", "--model", str(model), *flags])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_same_results(run: Path, evaluation: Path) -> None:
    """eval_results.json has test_results.json's keys and, but for timings, its values; predictions.jsonl is the
    run's, record for record."""
    trained = json.loads((run / "test_results.json").read_text())
    scored = json.loads((evaluation / "eval_results.json").read_text())
    assert scored.keys() == trained.keys()
    assert {k: v for k, v in scored.items() if not _timing(k)} == {k: v for k, v in trained.items() if not _timing(k)}
    assert _lines(evaluation / "predictions.jsonl") == _lines(run / "predictions.jsonl")


def _train_and_evaluate(task: str, preset: Path, argv: list[str], *evaluate_flags: str) -> tuple[Path, Path]:
    """Train with `argv` (its --output_dir is the model), evaluate the saved folder with `evaluate_flags` into
    MODEL/../eval; checks the model folder is left as it was. Returns (model folder, evaluation folder)."""
    model = Path(argv[argv.index("--output_dir") + 1])
    run_task_recipe(task, argv, preset)
    before = _files(model)
    evaluation = model.parent / "eval"
    assert _evaluate(model, *evaluate_flags, "--output_dir", str(evaluation)) == 0
    assert _files(model) == before  # never re-saved, nothing added beside it
    return model, evaluation


@pytest.fixture(scope="module")
def vqa_run(tmp_path_factory, tiny_text_dir):
    root = tmp_path_factory.mktemp("evaluate_vqa")
    data = make_imagefolder(root / "data", n_train=16, n_test=8)
    argv = recipe_argv(root / "model", tiny_text_dir, data, *RUN_FLAGS, "--per_device_train_batch_size", "8")
    model, evaluation = _train_and_evaluate("vqa", PRESET, argv, "--dataset", str(data))
    return {"root": root, "data": data, "model": model, "eval": evaluation}


def test_vqa_evaluate_equals_the_runs_test_metrics_on_an_imagefolder(vqa_run):
    _assert_same_results(vqa_run["model"], vqa_run["eval"])


def test_evaluate_defaults_to_a_folder_beside_the_weights_and_scores_another_split(vqa_run, capsys):
    """Default output: MODEL/eval/<dataset>-<split>; the train split (negative control) scores other rows."""
    model, data = vqa_run["model"], vqa_run["data"]
    assert _evaluate(model, "--dataset", str(data), "--split", "train") == 0
    folder = model / "eval" / "data-train"
    scored = json.loads((folder / "eval_results.json").read_text())
    assert len(_lines(folder / "predictions.jsonl")) == 16  # the 16 training rows, not the 8 test ones
    assert scored.keys() == json.loads((model / "test_results.json").read_text()).keys()
    assert scored["test_loss"] != json.loads((model / "test_results.json").read_text())["test_loss"]
    shutil.rmtree(model / "eval")


def test_evaluate_on_a_hub_layout_with_mapped_columns(vqa_run):
    """A `load_dataset` folder whose columns are named img/query/label, mapped with the recipe's flags."""
    hub = make_parquet_hub_layout(vqa_run["root"] / "hub", n_train=4, n_test=8)
    out = vqa_run["root"] / "eval_hub"
    mapping = ["--image_column", "img", "--question_column", "query", "--answers_column", "label"]
    assert _evaluate(vqa_run["model"], "--dataset", str(hub), *mapping, "--output_dir", str(out)) == 0
    records = _lines(out / "predictions.jsonl")
    assert len(records) == 8 and all(r["answers"] in (["red"], ["blue"], ["yes"], ["no"]) for r in records)
    assert 0.0 <= json.loads((out / "eval_results.json").read_text())["test_accuracy"] <= 1.0


def test_evaluate_needs_no_train_split(vqa_run):
    only_test = vqa_run["root"] / "only_test"
    shutil.copytree(vqa_run["data"] / "test", only_test / "test")
    out = vqa_run["root"] / "eval_only_test"
    assert _evaluate(vqa_run["model"], "--dataset", str(only_test), "--output_dir", str(out)) == 0
    trained = json.loads((vqa_run["model"] / "test_results.json").read_text())
    assert json.loads((out / "eval_results.json").read_text())["test_accuracy"] == trained["test_accuracy"]


def test_a_folder_without_trained_weights_is_refused_in_one_sentence(vqa_run, tmp_path, capsys):
    empty = tmp_path / "no_weights"  # what a run that died before saving its model may leave: all but the weights
    shutil.copytree(vqa_run["model"], empty, ignore=shutil.ignore_patterns("model.safetensors"))
    assert _evaluate(empty, "--dataset", str(vqa_run["data"])) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"mmft evaluate: --model {empty} holds no trained weights (model.safetensors, ")
    assert "\n" not in error and not (empty / "eval").exists()


def test_user_mistakes_exit_2_with_one_sentence(vqa_run, capsys):
    model, data = vqa_run["model"], str(vqa_run["data"])
    assert _evaluate(model, "--dataset", data, "--split", "validation") == 2
    assert "has no split 'validation'; available splits: ['test', 'train']" in capsys.readouterr().err
    assert _evaluate(model, "--dataset", data, "--submission", "r.json") == 2
    assert "--submission needs each question's question_id" in capsys.readouterr().err
    assert _evaluate(model, "--dataset", data, "--captions_file", "x.json") == 2  # a flag of another task
    assert "['--captions_file', 'x.json']" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["imagefolder", "coco_json"])
def test_retrieval_evaluate_equals_the_runs_test_metrics(fmt, tmp_path, tiny_text_dir):
    """The retrieval recipe on a caption imagefolder, or the same images as a Karpathy JSON (`coco_json`)."""
    folder = make_caption_folder(tmp_path / "data", n_train=8, n_test=6)
    data = ["--dataset", str(folder)] if fmt == "imagefolder" else _karpathy(folder, tmp_path / "coco.json")
    argv = [
        *data,
        *tiny_tower_flags(tiny_text_dir),
        *RUN_FLAGS,
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--rerank_k",
        "3",
        "--output_dir",
        str(tmp_path / "model"),
    ]
    model, evaluation = _train_and_evaluate(
        "retrieval",
        CONFIGS / "scenes_retrieval.yaml",
        argv,
        *data,
        "--rerank_k",
        "3",
        "--per_device_eval_batch_size",
        "4",
    )
    _assert_same_results(model, evaluation)


def _karpathy(folder: Path, path: Path) -> list[str]:
    """The caption imagefolder's rows as a Karpathy-split JSON (`--dataset coco_json`); its flags."""
    images = []
    for split, name in (("train", "train"), ("test", "test")):
        for row in _lines(folder / split / "metadata.jsonl"):
            captions = row.get("captions") or [row["caption"]]
            entry = {"filepath": split, "filename": row["file_name"], "split": name}
            images.append({**entry, "sentences": [{"raw": caption} for caption in captions]})
    path.write_text(json.dumps({"images": images}))
    return ["--dataset", "coco_json", "--captions_file", str(path), "--image_dir", str(folder)]


def test_classification_evaluate_equals_the_runs_test_metrics_on_a_table_folder(tmp_path, tiny_text_dir):
    """A table folder (`train.jsonl`, `test.jsonl`, images beside them)."""
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 16), ("test", 8)):
        with (data / f"{split}.jsonl").open("w") as handle:
            for i in range(n):
                colour, claim = ("red", "blue")[i % 2], ("red", "blue")[(i // 2) % 2]
                write_image(data / f"{split}_{i}.png", colour)
                row = {"image": f"{split}_{i}.png", "text": f"the square is {claim}", "label": str(claim == colour)}
                handle.write(json.dumps(row) + "\n")
    argv = [
        "--dataset",
        str(data),
        *tiny_tower_flags(tiny_text_dir),
        *RUN_FLAGS,
        "--per_device_train_batch_size",
        "8",
        "--per_device_eval_batch_size",
        "8",
        "--output_dir",
        str(tmp_path / "model"),
    ]
    model, evaluation = _train_and_evaluate(
        "classification", CONFIGS / "easy_vqa_entailment.yaml", argv, "--dataset", str(data)
    )
    _assert_same_results(model, evaluation)
    assert (evaluation / "confusion_matrix.png").stat().st_size > 0  # the run's extra file, beside the results


def test_captioning_evaluate_equals_the_runs_test_metrics(tmp_path, tiny_text_dir):
    """Captioning with a tiny decoder; its baselines read the dataset's training split, present here."""
    data = make_caption_folder(tmp_path / "data", n_train=8, n_test=4)
    decoder = save_tiny_decoder(tmp_path / "decoder")
    argv = [
        "--dataset",
        str(data),
        *tiny_tower_flags(tiny_text_dir),
        "--decoder_model",
        str(decoder),
        "--num_query_tokens",
        "2",
        *RUN_FLAGS,
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--max_new_tokens",
        "4",
        "--output_dir",
        str(tmp_path / "model"),
    ]
    flags = ("--dataset", str(data), "--max_new_tokens", "4", "--per_device_eval_batch_size", "4")
    model, evaluation = _train_and_evaluate("captioning", CONFIGS / "scenes_captioning.yaml", argv, *flags)
    _assert_same_results(model, evaluation)


# -- VQAv2 as the official evaluation has it ------------------------------------------------------------------------
# (question, answer type, question type, the 10 annotators' answers) of the val split: how many said the usual answer
# varies, so VQA accuracy takes every value from 0 to 1 whatever the model predicts.
VAL = [
    ("is the shape red?", "yes/no", "is the", ["yes"] * 10),
    ("is the shape red?", "yes/no", "is the", ["no"] * 4 + ["yes"] * 6),
    ("how many shapes are there?", "number", "how many", ["1"] * 2 + ["2"] * 8),
    ("how many shapes are there?", "number", "how many", ["1"] * 9 + ["one"]),
    ("what color is the shape?", "other", "what color is the", ["red"] * 3 + ["blue"] * 7),
    ("what color is the shape?", "other", "what color is the", ["blue"] * 5 + ["red"] * 5),
]


def _vqav2_files(root: Path) -> dict[str, list[str]]:
    """Train and val questions + annotations JSON and COCO-named images; the flags of each split's files."""
    flags = {}
    train = [(q, a, t, answers[::-1]) for q, a, t, answers in VAL] * 2
    for split, rows in (("train", train), ("val", VAL)):
        images = root / f"{split}2014"
        images.mkdir(parents=True)
        questions, annotations = [], []
        for i, (question, answer_type, question_type, answers) in enumerate(rows):
            write_image(images / f"COCO_{split}2014_{i:012d}.jpg", ("red", "blue")[i % 2])
            questions.append({"image_id": i, "question": question, "question_id": 5000 + 10 * i})
            annotations.append(
                {
                    "question_id": 5000 + 10 * i,
                    "image_id": i,
                    "answer_type": answer_type,
                    "question_type": question_type,
                    "multiple_choice_answer": answers[0],
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)
                    ],
                }
            )
        (root / f"{split}_questions.json").write_text(json.dumps({"questions": questions}))
        (root / f"{split}_annotations.json").write_text(json.dumps({"annotations": annotations}))
        prefix = "--" if split == "train" else "--eval_"
        flags[split] = [
            f"{prefix}questions_file",
            str(root / f"{split}_questions.json"),
            f"{prefix}annotations_file",
            str(root / f"{split}_annotations.json"),
            f"{prefix}image_dir",
            str(images),
        ]
    return flags


def _official_accuracy(prediction: str, answers: list[str]) -> float:
    """The official VQA accuracy of one answer, written out: over the 10 sets of 9 annotators (one left out),
    min(1, those who gave the prediction / 3), averaged. Answers here need no normalisation but lower case."""
    subsets = [answers[:i] + answers[i + 1 :] for i in range(len(answers))]
    return sum(min(1.0, sum(a == prediction.lower() for a in subset) / 3) for subset in subsets) / len(subsets)


@pytest.fixture(scope="module")
def vqav2_run(tmp_path_factory, tiny_text_dir):
    root = tmp_path_factory.mktemp("evaluate_vqav2")
    files = _vqav2_files(root / "data")
    data = ["--dataset", "vqav2", *files["train"], *files["val"]]
    argv = recipe_argv(root / "model", tiny_text_dir, root / "unused", *RUN_FLAGS, "--per_device_train_batch_size", "4")
    argv[argv.index("--dataset") : argv.index("--dataset") + 2] = data
    model, evaluation = _train_and_evaluate("vqa", PRESET, argv, *data, "--submission", str(root / "results.json"))
    return {"root": root, "files": files, "model": model, "eval": evaluation}


def test_vqav2_per_answer_type_accuracy_is_the_official_one_by_hand(vqav2_run):
    _assert_same_results(vqav2_run["model"], vqav2_run["eval"])
    scored = json.loads((vqav2_run["eval"] / "eval_results.json").read_text())
    records = _lines(vqav2_run["eval"] / "predictions.jsonl")
    assert [r["question_id"] for r in records] == [5000 + 10 * i for i in range(len(VAL))]
    by_type: dict[str, list[float]] = {}
    for record, (_, answer_type, _, answers) in zip(records, VAL):
        assert record["answer_type"] == answer_type
        by_type.setdefault(answer_type, []).append(_official_accuracy(record["prediction"], answers))
    expected = {f"test_accuracy_answer_type_{key}": sum(v) / len(v) for key, v in by_type.items()}
    expected = {key.replace("yes/no", "yes_no"): value for key, value in expected.items()}
    assert {key: scored[key] for key in expected} == pytest.approx(expected, abs=1e-12)
    everything = [score for scores in by_type.values() for score in scores]
    assert scored["test_accuracy"] == pytest.approx(sum(everything) / len(everything), abs=1e-12)
    assert {"test_accuracy_is_the", "test_accuracy_how_many", "test_accuracy_what_color_is_the"} <= scored.keys()


def test_vqav2_submission_answers_every_question_as_predicted(vqav2_run):
    submission = json.loads((vqav2_run["root"] / "results.json").read_text())
    records = _lines(vqav2_run["eval"] / "predictions.jsonl")
    assert submission == [{"question_id": r["question_id"], "answer": r["prediction"]} for r in records]
    assert all(isinstance(entry["question_id"], int) for entry in submission)


def test_vqav2_evaluate_reads_only_the_eval_files(vqav2_run):
    """No training questions at all: the val files alone (`--split validation` is what the reader calls them)."""
    out = vqav2_run["root"] / "eval_only"
    data = ["--dataset", "vqav2", *vqav2_run["files"]["val"]]
    assert _evaluate(vqav2_run["model"], *data, "--output_dir", str(out)) == 0
    scored = json.loads((out / "eval_results.json").read_text())
    trained = json.loads((vqav2_run["model"] / "test_results.json").read_text())
    assert scored["test_accuracy_answer_type_number"] == trained["test_accuracy_answer_type_number"]


# -- mmft predict --dataset: every task and format, with the recipe's data flags --------------------------------------
def test_predict_dataset_reads_vqav2_and_coco_json_with_the_recipes_flags(vqav2_run, tmp_path, capsys):
    out = tmp_path / "vqav2.jsonl"
    data = ["--dataset", "vqav2", *vqav2_run["files"]["val"]]
    assert main(["predict", "--model", str(vqav2_run["model"]), *data, "--output", str(out)]) == 0
    records = _lines(out)
    assert [r["question_id"] for r in records] == [5000 + 10 * i for i in range(len(VAL))]
    assert all(r["prediction"] for r in records) and records[0]["question"] == VAL[0][0]
