"""A task written outside mmft joins it by `register_task` alone: its recipe run, Auto class, pipeline, `mmft
predict` and model card work with no other edit (the task below lives only in this file)."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
from helpers_launch import REPO, run_task_recipe, tiny_tower_flags
from test_e2e_classification import make_entailment_folder
from transformers import pipeline
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping

from mmft import TASKS, CardInfo, ImageTextClassificationPipeline, MMFTForImageTextClassification, register_task
from mmft.cli import main
from mmft.tasks.classification.task import ClassificationTask

pytestmark = pytest.mark.e2e


class MMFTForClaimChecking(MMFTForImageTextClassification):
    """The user's head: a classifier of claims about an image (a class of its own, saved under its own name)."""


class AutoModelForClaimChecking(_BaseAutoModelClass):
    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class ClaimCheckingPipeline(ImageTextClassificationPipeline):
    """Image + claim -> true / false with their scores."""


class ClaimCheckingTask(ClassificationTask):
    name = "claim_checking"
    model_class = MMFTForClaimChecking
    auto_class = AutoModelForClaimChecking
    pipeline_task = "claim-checking"
    pipeline_class = ClaimCheckingPipeline
    card = CardInfo(
        pipeline_tag=None,
        task_type="claim-checking",
        task_name="Claim Checking",
        summary="A model that checks claims about an image",
        metrics=("accuracy",),
        usage='checker = pipeline("claim-checking", model="{repo}")  # after `import my_claims`',
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_text_dir):
    register_task(ClaimCheckingTask)
    root = tmp_path_factory.mktemp("claims")
    data, output = make_entailment_folder(root / "data", n_train=16, n_test=8), root / "out"
    argv = [
        "--dataset",
        str(data),
        *tiny_tower_flags(tiny_text_dir),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--output_dir",
        str(output),
    ]
    # the classification recipe's preset, as `recipes/claim_checking.py` would pass it: the task's own flags apply
    metrics = run_task_recipe("claim_checking", argv, REPO / "recipes" / "configs" / "easy_vqa_entailment.yaml")
    yield {"output": output, "data": data, "metrics": metrics}
    TASKS.pop(ClaimCheckingTask.name)


def test_the_recipe_path_trains_and_saves_the_users_model_class(trained):
    assert "test_accuracy" in trained["metrics"]
    config = json.loads((trained["output"] / "config.json").read_text())
    assert config["architectures"] == ["MMFTForClaimChecking"]


def test_its_auto_class_and_pipeline_load_the_saved_model(trained):
    assert type(AutoModelForClaimChecking.from_pretrained(trained["output"])) is MMFTForClaimChecking
    checker = pipeline("claim-checking", model=str(trained["output"]))
    assert isinstance(checker, ClaimCheckingPipeline)
    scores = checker(image=str(trained["data"] / "test" / "0.png"), text="the square is red")
    assert {s["label"] for s in scores} == {"true", "false"}


def test_mmft_predict_serves_it_and_knows_its_name(trained, capsys):
    image = trained["data"] / "test" / "0.png"
    assert (
        main(
            [
                "predict",
                "--model",
                str(trained["output"]),
                "--task",
                "claim_checking",
                "--image",
                str(image),
                "--text",
                "the square is red",
            ]
        )
        == 0
    )
    printed = [line.split("\t")[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert sorted(printed) == ["false", "true"]


def test_the_card_says_what_the_task_declares(trained):
    card = (trained["output"] / "README.md").read_text()
    assert "A model that checks claims about an image" in card
    assert f'checker = pipeline("claim-checking", model="{trained["output"]}")' in card
    assert f'mmft explain --model {trained["output"]} --image image.png --text "..." --out heatmap.png' in card


@pytest.mark.parametrize(
    "task, expected",
    [
        (
            "vqa",
            [
                'mmft predict --model me/m --image image.png --text "..."',
                'mmft explain --model me/m --image image.png --text "..." --out heatmap.png',
            ],
        ),
        (
            "retrieval",
            [
                'mmft predict --model me/m --image image.png --text "..."',
                'mmft search --model me/m --images FOLDER --query "..."',
            ],
        ),
        ("captioning", ["mmft predict --model me/m --image image.png"]),
    ],
)
def test_each_task_names_the_commands_its_models_serve(task, expected):
    assert TASKS[task].command_lines("me/m") == expected
