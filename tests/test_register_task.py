"""A task written outside mmft joins it by `register_task` alone: its recipe run, Auto class, pipeline, `mmft
predict` (with `--task`), a verb of its own, its `mmft demo` page, the model card and the model contract tests' input
builder work with no other edit (the task below lives only in this file)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import OrderedDict
from functools import partial

import pytest
from helpers_launch import REPO, run_task_recipe, tiny_tower_flags
from test_e2e_classification import make_entailment_folder
from transformers import pipeline
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping

import mmft
from mmft import TASKS, CardInfo, ImageTextClassificationPipeline, MMFTForImageTextClassification, register_task
from mmft.cli import build_parser, main
from mmft.tasks.classification.task import ClassificationTask

pytestmark = pytest.mark.e2e


class MMFTForClaimChecking(MMFTForImageTextClassification):
    """The user's head: a classifier of claims about an image (a class of its own, saved under its own name)."""


class AutoModelForClaimChecking(_BaseAutoModelClass):
    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class ClaimCheckingPipeline(ImageTextClassificationPipeline):
    """Image + claim -> true / false with their scores."""


def _verdict(load_model, args: argparse.Namespace) -> int:
    """`mmft verdict --model M --image I --claim C`: the task's own verb, printing the best label only."""
    model, processor, task = load_model(args.model, "claim_checking")
    checker = task.pipeline_class(model=model, processor=processor)
    print(checker(image=args.image, text=args.claim)[0]["label"])
    return 0


def add_verdict(commands, device: str, load_model) -> None:
    verdict = commands.add_parser("verdict", help="claim checking models: true or false")
    verdict.add_argument("--model", required=True)
    verdict.add_argument("--image", required=True)
    verdict.add_argument("--claim", required=True)
    verdict.set_defaults(run=partial(_verdict, load_model))


PAGES: list = []  # (the LoadedModel, the page's answer function) of each page `claim_page` built


def claim_page(loaded) -> None:
    """The task's own `mmft demo` page: image + claim -> the verdict, on the widgets mmft's pages share."""
    import gradio as gr

    from mmft.demo.widgets import _image, _needs, _scored

    image = _image()
    claim = gr.Textbox(label="claim", elem_id="claim")
    check = gr.Button("Check", variant="primary", elem_id="check")
    verdict = gr.Label(label="verdict", elem_id="verdict")

    def judge(image_path, text):
        _needs(image=image_path, claim=text)
        return _scored(loaded.pipeline(image_path, text=text), "label")

    check.click(judge, [image, claim], verdict)
    PAGES.append((loaded, judge))


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
    commands = ("predict", "explain", "verdict")
    verbs = {"verdict": f"{__name__}:add_verdict"}  # `mmft verdict`, added by the registry
    demo = f"{__name__}:claim_page"  # its `mmft demo` page (else it would inherit classification's)


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


def test_its_own_verb_and_its_name_are_on_the_command_line(trained, capsys):
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    assert "verdict" in commands.choices
    assert "claim_checking" in commands.choices["predict"].format_help()  # --task {...} lists it
    image, model = str(trained["data"] / "test" / "0.png"), str(trained["output"])
    assert main(["verdict", "--model", model, "--image", image, "--claim", "the square is red"]) == 0
    assert capsys.readouterr().out.strip() in {"true", "false"}


def test_mmft_demo_serves_the_page_its_task_declares_and_refuses_a_task_without_one(trained, monkeypatch, capsys):
    import gradio

    launched = []
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kwargs: launched.append(self))
    model, image = str(trained["output"]), str(trained["data"] / "test" / "0.png")
    assert main(["demo", model]) == 0
    (page,) = launched
    assert {"image", "claim", "check", "verdict"} <= {getattr(block, "elem_id", None) for block in page.blocks.values()}
    loaded, judge = PAGES[-1]
    assert loaded.task is ClaimCheckingTask and isinstance(loaded.pipeline, ClaimCheckingPipeline)
    assert judge(image, "the square is red").keys() == {"true", "false"}  # answered by the task's pipeline

    monkeypatch.setattr(ClaimCheckingTask, "demo", None)  # a task that declares no page
    capsys.readouterr()
    assert main(["demo", model]) == 2
    refusal = capsys.readouterr().err
    assert "'claim_checking' model, and that task has no demo" in refusal
    assert "Traceback" not in refusal and refusal.count("\n") == 1, refusal


def test_its_head_gets_a_contract_test_batch_from_its_forward():
    from helpers_contract import image_text_inputs, inputs_for, tiny

    model = tiny(MMFTForClaimChecking)
    inputs = inputs_for(model)
    assert inputs.keys() == image_text_inputs(model).keys()
    assert model(**inputs).logits.shape[0] == inputs["pixel_values"].shape[0]


def test_register_task_by_package_loads_only_its_model_side():
    """A task registered by package path (as the built-in tasks, one line each) registers its head and exports at
    once, and loads its `task.py` (the training stack) only when `TASKS[name]` is read."""
    code = (
        "import sys, mmft\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "assert 'mmft-vqa' in PIPELINE_REGISTRY.supported_tasks and mmft.VQAPipeline\n"
        "assert 'mmft.tasks.vqa.task' not in sys.modules\n"
        "assert mmft.TASKS['vqa'].__module__ == 'mmft.tasks.vqa.task'\n"
        "assert 'mmft.tasks.vqa.task' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    assert mmft.TASKS.model_class("vqa") is mmft.MMFTForVisualQuestionAnswering


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
