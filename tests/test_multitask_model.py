"""`MMFTForMultiTask`: one shared core (towers, projections, bridge) and a head per task, built from the registry.

Each task's forward through the joint model equals its `for_task` model's; the weights are shared in memory (a
change through the joint model shows in every task model, each parameter is counted once); the joint model saves and
loads through `AutoModelForMultiTask` / `AutoModel`; a task model saved alone loads with its task's Auto class,
pipeline and `mmft predict`; a task registered in this file joins with no other edit.
"""

from __future__ import annotations

import pytest
import torch
from conftest import IMAGE_SIZE, TINY_TIMM_CNN, tiny_text_config, tiny_vision_config
from helpers_contract import caption_inputs, image_text_inputs, retrieval_inputs, tiny_decoder_config
from PIL import Image
from transformers import AutoModel, AutoModelForVisualQuestionAnswering, pipeline

from mmft import (
    TASKS,
    AutoModelForMultiTask,
    ImageTextClassificationPipeline,
    MMFTForImageTextClassification,
    MMFTForMultiTask,
    MMFTProcessor,
    register_task,
)
from mmft.auto import new_auto_class
from mmft.cli import main
from mmft.multitask.norm_statistics import BUFFERS, batch_norms
from mmft.towers import BatchShapes

ANSWERS = ["yes", "no", "red", "circle"]
SHARED = dict(num_bridge_layers=1, hidden_size=32, num_attention_heads=2, hidden_dropout=0.0)
DECODER = tiny_decoder_config()
TASK_OVERRIDES = {
    "vqa": {"labels": ANSWERS},
    "classification": {"labels": ["false", "true"], "problem_type": "single_label_classification"},
    "retrieval": {"projection_dim": 16},
    "captioning": {"decoder_config": DECODER, "num_query_tokens": 3},
}
INPUTS = {"vqa": image_text_inputs, "classification": image_text_inputs, "retrieval": retrieval_inputs}
INPUTS["captioning"] = caption_inputs


def tiny_multitask(tasks=TASK_OVERRIDES, seed: int = 0) -> MMFTForMultiTask:
    torch.manual_seed(seed)
    return MMFTForMultiTask.from_vision_text_pretrained(
        tiny_vision_config("timm_cnn"), tiny_text_config(), tasks=tasks, **SHARED
    ).eval()


@pytest.fixture(scope="module")
def model() -> MMFTForMultiTask:
    return tiny_multitask()


def batch(model: MMFTForMultiTask, task: str, seed: int = 0) -> dict:
    return INPUTS[task](model.for_task(task), labels=True, seed=seed)


@pytest.mark.parametrize("task", list(TASK_OVERRIDES))
def test_forward_is_the_task_models_forward(model, task):
    task_model = model.for_task(task)
    assert type(task_model) is TASKS.model_class(task)
    inputs = batch(model, task)
    with torch.no_grad():
        joint, alone = model(task=task, **inputs), task_model(**inputs)
    assert type(joint) is type(alone)
    assert torch.isfinite(joint.loss)
    assert torch.equal(joint.logits, alone.logits) and torch.equal(joint.loss, alone.loss)


def test_unknown_task_names_the_known_ones(model):
    with pytest.raises(ValueError, match="unknown task 'ocr'; this model's tasks: vqa, classification, retrieval"):
        model(task="ocr", **batch(model, "vqa"))
    with pytest.raises(ValueError, match="unknown task\\(s\\) \\['ocr'\\]; known: .*vqa"):
        MMFTForMultiTask.from_vision_text_pretrained(tiny_vision_config("timm_cnn"), tiny_text_config(), {"ocr": {}})


def test_weights_are_shared_and_counted_once(model):
    core_ids = {id(p) for p in model.mmft.parameters()}
    for task in model.task_names:
        task_model = model.for_task(task)
        assert task_model.core is model.mmft  # the same module, not a copy
        # every parameter of a task model is one of the joint model's
        assert {id(p) for p in task_model.parameters()} <= {id(p) for p in model.parameters()}
        assert core_ids <= {id(p) for p in task_model.parameters()}
    weight = model.mmft.vision_projection.weight
    with torch.no_grad():
        weight.add_(1.0)
    try:
        for task in model.task_names:
            assert torch.equal(model.for_task(task).core.vision_projection.weight, weight)
    finally:
        with torch.no_grad():
            weight.sub_(1.0)
    # the joint model's parameters are the core once plus each head's own
    heads = sum(p.numel() for head in model.heads.values() for p in head.parameters())
    core = sum(p.numel() for p in model.mmft.parameters())
    assert sum(p.numel() for p in model.parameters()) == core + heads
    assert len(list(model.parameters())) == len(list(model.named_parameters(remove_duplicate=False)))
    keys = model.state_dict().keys()
    assert all(key.startswith(("mmft.", "heads.", "norm_statistics.")) for key in keys)  # + per-task BatchNorm stats
    assert not any(".mmft." in key for key in keys)  # no task's core saved a second time


def test_what_shared_code_asks(model):
    assert set(model.towers()) == {"vision", "text", "decoder"}
    assert model.towers()["decoder"] is model.for_task("captioning").decoder
    trained = model.trained_module_names()
    assert {"mmft.bridge", "heads.vqa", "heads.retrieval", "heads.captioning.caption_prefix"} <= set(trained)
    shapes = BatchShapes(image_tokens=16, text_tokens=7, pixel_shape=(3, IMAGE_SIZE, IMAGE_SIZE), caption_tokens=5)
    assert model.part_flops(shapes, task="retrieval") == model.for_task("retrieval").part_flops(shapes)
    assert "decoder" not in model.part_flops(shapes, task="vqa")
    assert model.part_flops(shapes)["bridge"] == max(model.part_flops(shapes, task=t)["bridge"] for t in TASK_OVERRIDES)


def test_save_and_load_through_the_auto_classes(model, tmp_path):
    model.save_pretrained(tmp_path)
    for auto in (AutoModelForMultiTask, AutoModel):
        loaded = auto.from_pretrained(tmp_path).eval()
        assert type(loaded) is MMFTForMultiTask
        for task in ("vqa", "retrieval", "captioning"):
            inputs = batch(model, task)
            with torch.no_grad():
                assert torch.equal(loaded(task=task, **inputs).logits, model(task=task, **inputs).logits)


@pytest.fixture(scope="module")
def vqa_folder(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("multitask_vqa")
    model.for_task("vqa").save_pretrained(folder)
    MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", IMAGE_SIZE, TINY_TIMM_CNN).save_pretrained(
        folder
    )
    Image.new("RGB", (32, 32), "red").save(folder / "red.png")
    return folder


def _joint_answers(model, folder) -> list[tuple[str, float]]:
    """The multi-task model's VQA answers, ranked, for the saved image and question."""
    inputs = MMFTProcessor.from_pretrained(folder)(images=Image.open(folder / "red.png"), text="what color?")
    with torch.no_grad():
        scores = model(task="vqa", **inputs).logits[0].softmax(-1)
    return [(ANSWERS[int(i)], float(scores[i])) for i in scores.argsort(descending=True)]


def test_a_task_saved_alone_loads_with_its_auto_class_and_pipeline(model, vqa_folder):
    single = AutoModelForVisualQuestionAnswering.from_pretrained(vqa_folder).eval()
    assert type(single) is TASKS.model_class("vqa")
    assert not any(key.startswith("heads.") for key in single.state_dict())
    inputs = batch(model, "vqa")
    with torch.no_grad():
        assert torch.equal(single(**inputs).logits, model(task="vqa", **inputs).logits)
    expected = _joint_answers(model, vqa_folder)
    answers = pipeline("mmft-vqa", model=str(vqa_folder))(
        image=str(vqa_folder / "red.png"), question="what color?", top_k=len(ANSWERS)
    )
    assert [a["answer"] for a in answers] == [answer for answer, _ in expected]
    assert [a["score"] for a in answers] == pytest.approx([score for _, score in expected], abs=1e-5)


def test_a_task_saved_alone_serves_mmft_predict(model, vqa_folder, capsys):
    image = str(vqa_folder / "red.png")
    argv = ["predict", "--model", str(vqa_folder), "--image", image, "--question", "what color?", "--top_k", "3"]
    assert main(argv) == 0
    printed = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    expected = _joint_answers(model, vqa_folder)[:3]
    assert [answer for _, answer in printed] == [answer for answer, _ in expected]
    assert [float(score) for score, _ in printed] == pytest.approx([score for _, score in expected], abs=1e-4)


class MMFTForClaimScoring(MMFTForImageTextClassification):
    """A user's head, written in this file only."""


AutoModelForClaimScoring = new_auto_class("AutoModelForClaimScoring", "claim scoring models")


@pytest.fixture
def claim_task():
    from mmft.tasks.classification.task import ClassificationTask

    class ClaimScoringTask(ClassificationTask):
        name = "claim_scoring"
        model_class = MMFTForClaimScoring
        auto_class = AutoModelForClaimScoring
        pipeline_task = "claim-scoring"
        pipeline_class = ImageTextClassificationPipeline

    register_task(ClaimScoringTask)
    yield ClaimScoringTask.name
    del TASKS[ClaimScoringTask.name]


def test_a_task_registered_here_joins_with_no_other_edit(claim_task, tmp_path):
    model = tiny_multitask({"vqa": {"labels": ANSWERS}, claim_task: {"labels": ["false", "true"]}})
    assert type(model.for_task(claim_task)) is MMFTForClaimScoring
    assert any(key.startswith(f"heads.{claim_task}.classifier.") for key in model.state_dict())
    inputs = image_text_inputs(model.for_task(claim_task))
    with torch.no_grad():
        assert torch.equal(model(task=claim_task, **inputs).logits, model.for_task(claim_task)(**inputs).logits)
    model.for_task(claim_task).save_pretrained(tmp_path)
    assert type(AutoModelForClaimScoring.from_pretrained(tmp_path)) is MMFTForClaimScoring


def _norm_state(model) -> dict[str, torch.Tensor]:
    """The running statistics of the shared towers' BatchNorm layers, as they are now."""
    return {f"{name}.{b}": getattr(norm, b).clone() for name, norm in batch_norms(model.mmft) for b in BUFFERS}


def _train_forwards(model, tasks: list[str], batches: dict) -> None:
    model.train()
    with torch.no_grad():
        for task in tasks:
            model(task=task, **batches[task])
    model.eval()


def test_each_task_keeps_its_own_batchnorm_statistics(tmp_path):
    """Two tasks whose images differ (pixels shifted up for one, down for the other) trained in turn: each task's
    statistics are those a model trained on that task alone would have, they survive a save and reload, and a task's
    model saved alone carries its own."""
    two = {task: TASK_OVERRIDES[task] for task in ("vqa", "classification")}
    joint, vqa_only, mixed = (tiny_multitask(two), tiny_multitask(two), tiny_multitask(two))
    assert batch_norms(joint.mmft), "the tiny timm CNN must have BatchNorm layers for this test to mean anything"
    batches = {"vqa": batch(joint, "vqa", seed=1), "classification": batch(joint, "classification", seed=2)}
    batches["vqa"]["pixel_values"] = batches["vqa"]["pixel_values"] + 3.0
    batches["classification"]["pixel_values"] = batches["classification"]["pixel_values"] - 3.0
    _train_forwards(joint, ["vqa", "classification"] * 3, batches)
    _train_forwards(vqa_only, ["vqa"] * 3, batches)
    joint.for_task("vqa")
    vqa_statistics = _norm_state(joint)
    vqa_only.for_task("vqa")
    for key, value in _norm_state(vqa_only).items():
        torch.testing.assert_close(vqa_statistics[key], value, rtol=0, atol=0, msg=key)
    joint.for_task("classification")
    first_mean = next(key for key in vqa_statistics if key.endswith("running_mean"))
    assert not torch.equal(_norm_state(joint)[first_mean], vqa_statistics[first_mean])  # the other task's own

    # negative control: one set of statistics (task_norm_statistics=False) averages both tasks' images
    mixed.config.task_norm_statistics = False
    mixed.norm_statistics = None
    _train_forwards(mixed, ["vqa", "classification"] * 3, batches)
    mixed_statistics = _norm_state(mixed)
    assert any(not torch.equal(mixed_statistics[k], v) for k, v in vqa_statistics.items() if "running_mean" in k)

    joint.save_pretrained(tmp_path / "joint")
    loaded = AutoModelForMultiTask.from_pretrained(tmp_path / "joint")
    loaded.for_task("vqa")
    for key, value in _norm_state(loaded).items():
        torch.testing.assert_close(value, vqa_statistics[key], rtol=0, atol=0, msg=key)
    loaded.for_task("vqa").save_pretrained(tmp_path / "vqa")
    alone = AutoModelForVisualQuestionAnswering.from_pretrained(tmp_path / "vqa")
    for name, norm in batch_norms(alone.core):
        torch.testing.assert_close(norm.running_mean, vqa_statistics[f"{name}.running_mean"], rtol=0, atol=0)
