"""The task layer: the task registry, image-text classification (data, head, LoRA, metrics), new bridges, presets."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from conftest import IMAGE_SIZE, tiny_text_config, tiny_vision_config, train_steps
from helpers_data import write_image
from transformers import Trainer, TrainingArguments

import mmft
from mmft import LoraPlan, MMFTForImageTextClassification
from mmft.bridge import BRIDGES, CoAttentionBridge, register_bridge
from mmft.callbacks import ThroughputCallback
from mmft.data import DataError, SourceSpec
from mmft.presets import drop_other_towers_keys, load_preset
from mmft.tasks import TASKS, get_task, task_for_model
from mmft.tasks.classification.task import ClassificationArguments, ClassificationTask, balanced_weights, label_order

LABELS = ["false", "true"]


def tiny_classifier(
    vision: str = "timm_vit", bridge: str = "co_attention", **overrides
) -> MMFTForImageTextClassification:
    torch.manual_seed(0)
    options = dict(num_bridge_layers=1, hidden_size=32, num_attention_heads=2, hidden_dropout=0.0, labels=LABELS)
    return MMFTForImageTextClassification.from_vision_text_pretrained(
        vision=tiny_vision_config(vision), text=tiny_text_config(), bridge=bridge, **{**options, **overrides}
    )


def _batch(tokenizer, n: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    text = tokenizer(
        ["there is a red circle", "the shape is blue"] * (n // 2),
        padding=True,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    return {
        "pixel_values": torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        **text,
        "labels": torch.tensor([0, 1] * (n // 2)),
    }


def head_trains(model_factory, plan: LoraPlan, batch) -> bool:
    """Whether the classification head's weights move when `plan` is trained for a few steps."""
    model = plan.apply(model_factory())
    head = {n: p for n, p in model.named_parameters() if ".classifier." in f".{n}" and p.requires_grad}
    before = {n: p.detach().clone() for n, p in head.items()}
    train_steps(model, batch, steps=3)
    return bool(head) and all(not torch.equal(before[n], p.detach()) for n, p in head.items())


class FrozenHeadClassifier(MMFTForImageTextClassification):
    """A broken head that forgets to declare its classifier as trained (the negative control)."""

    def trained_module_names(self) -> list[str]:
        return [name for name in super().trained_module_names() if name != "classifier"]


@pytest.mark.parametrize(
    "plan",
    [LoraPlan(vision="lora", text="frozen"), LoraPlan(vision="frozen", text="lora")],
    ids=["lora_vision", "lora_text"],
)
def test_classification_head_trains_under_a_lora_plan_on_either_tower(plan, tokenizer):
    batch = _batch(tokenizer)
    assert head_trains(tiny_classifier, plan, batch)
    broken = lambda: FrozenHeadClassifier(tiny_classifier().config)  # noqa: E731
    assert not head_trains(broken, plan, batch)  # negative control: a head the model does not declare stays frozen


def test_trained_modules_are_everything_but_the_towers():
    assert tiny_classifier().trained_module_names() == [
        "mmft.vision_projection",
        "mmft.text_projection",
        "mmft.modality_embeddings",
        "mmft.bridge",
        "classifier",
    ]


def test_a_loose_parameter_beside_a_tower_is_refused():
    model = tiny_classifier()
    model.core.temperature = torch.nn.Parameter(torch.ones(()))
    with pytest.raises(TypeError, match=r"\['mmft.temperature'\] sit on a module that also holds a tower"):
        model.trained_module_names()


class ScaledCoAttention(CoAttentionBridge):
    """A new fusion defined outside mmft: co-attention with its output scaled (inherits the FLOPs formula)."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.pooled = out.pooled * 0.5
        return out


class MeanPoolBridge(mmft.Bridge):
    """A brand-new fusion with no FLOPs formula: counted by torch's FLOP counter."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.mix = torch.nn.Linear(2 * config.hidden_size, 2 * config.hidden_size)

    def forward(self, text_states, image_states, text_mask=None, output_attentions=False, output_hidden_states=False):
        pooled = torch.cat([text_states.mean(1), image_states.mean(1)], dim=-1)
        return mmft.BridgeOutput(text_states, image_states, self.mix(pooled))


@pytest.mark.parametrize("bridge_class", [ScaledCoAttention, MeanPoolBridge])
def test_a_bridge_registered_from_a_test_file_trains_with_the_throughput_callback(bridge_class, tokenizer, tmp_path):
    name = f"test_{bridge_class.__name__.lower()}"
    register_bridge(name, bridge_class)
    try:
        model = tiny_classifier(bridge=name)
        batch = _batch(tokenizer)
        rows = [{k: v[i] for k, v in batch.items()} for i in range(8)]
        args = TrainingArguments(
            output_dir=str(tmp_path),
            max_steps=4,
            per_device_train_batch_size=4,
            logging_steps=2,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[ThroughputCallback()])
        trainer.train()
        logged = [row for row in trainer.state.log_history if "perf/flops_per_step" in row]
        assert logged and all(row["perf/flops_per_step"] > 0 for row in logged)
        text_tokens, image_tokens = batch["input_ids"].shape[1], 16
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model.core.bridge.eval()(torch.randn(1, text_tokens, 32), torch.randn(1, image_tokens, 32))
        assert model.core.bridge.flops(text_tokens, image_tokens) == pytest.approx(counter.get_total_flops())
    finally:
        BRIDGES.pop(name)


# -- data --------------------------------------------------------------------------------------------------------
def _write_rows(folder, rows, fmt: str = "imagefolder"):
    """Images + a table of rows in imagefolder (metadata.jsonl per split) or table-folder (<split>.csv) layout."""
    for split, split_rows in rows.items():
        images = folder / split if fmt == "imagefolder" else folder / "images"
        images.mkdir(parents=True, exist_ok=True)
        for row in split_rows:
            write_image(images / row["file"], row.get("colour", "red"))
        if fmt == "imagefolder":
            with (images / "metadata.jsonl").open("w") as handle:
                for row in split_rows:
                    handle.write(json.dumps({"file_name": row["file"], "text": row["text"], **row["target"]}) + "\n")
        else:
            lines = ["image,text,label"] + [
                f"images/{r['file']},{r['text']},{r['target']['label']}" for r in split_rows
            ]
            (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return folder


def _rows(n: int, target) -> list[dict]:
    return [
        {"file": f"{i}.png", "text": f"statement {i}", "colour": ("red", "blue")[i % 2], "target": target(i)}
        for i in range(n)
    ]


def _prepare(root, **args):
    return ClassificationTask(ClassificationArguments(**args)).prepare_data(SourceSpec(dataset=str(root)))


def test_single_label_imagefolder_and_csv_tables_give_the_same_labels(tmp_path):
    rows = {"train": _rows(6, lambda i: {"label": i % 3}), "test": _rows(3, lambda i: {"label": i % 3})}
    folder = _prepare(_write_rows(tmp_path / "folder", rows))
    table = _prepare(_write_rows(tmp_path / "table", rows, fmt="csv"))
    assert folder.labels == table.labels == ["0", "1", "2"] and not folder.info["multi_label"]
    assert folder.train["labels"] == table.train["labels"] == [[str(i % 3)] for i in range(6)]


def test_multi_label_rows_are_multi_hot_and_class_weights_balance(tmp_path, tokenizer):
    rows = {
        "train": _rows(4, lambda i: {"labels": [["cat"], ["cat", "dog"], ["dog", "bird"], ["cat"]][i]}),
        "test": _rows(2, lambda i: {"labels": ["dog"]}),
    }
    data = _prepare(_write_rows(tmp_path / "d", rows), class_weights="balanced")
    assert data.labels == ["bird", "cat", "dog"] and data.info["multi_label"]
    assert data.info["class_weights"] == pytest.approx([3 / 1, 1 / 3, 2 / 2])  # negatives / positives per label
    encode = ClassificationTask().encode(data, "train")
    assert encode({"labels": [["cat", "dog"]]})["labels"] == [[0.0, 1.0, 1.0]]
    assert balanced_weights([["a"], ["a"], ["b"]], ["a", "b"], multi_label=False) == pytest.approx([0.75, 1.5])


@pytest.mark.parametrize("multi", [False, True], ids=["cross_entropy_weight", "bce_pos_weight"])
def test_class_weights_flag_weights_the_loss_as_torch_does_on_the_models_logits(multi, tmp_path, tokenizer):
    """`--class_weights 2,0.5,1` reaches the head's loss: the cross-entropy's class `weight` (single-label) or the
    BCE's per-label `pos_weight` (multi-label), as torch computes them on the model's own logits for a batch."""
    weights = torch.tensor([2.0, 0.5, 1.0])
    train = [["a"], ["a", "b"], ["b", "c"], ["c"]] if multi else [["a"], ["b"], ["c"], ["a"]]
    rows = {"train": _rows(4, lambda i: {"labels": train[i]}), "test": _rows(2, lambda i: {"labels": ["a"]})}
    task = ClassificationTask(ClassificationArguments(class_weights="2,0.5,1"))
    data = task.prepare_data(SourceSpec(dataset=str(_write_rows(tmp_path / "d", rows))))
    assert data.info["multi_label"] is multi  # decided by the rows: one label each, or not
    model = tiny_classifier(**task.model_kwargs(data), **task.config_updates(data)).eval()  # eval: no dropout
    if multi:
        labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]] * 2, dtype=torch.float32)
        loss_fn, weight_name = F.binary_cross_entropy_with_logits, "pos_weight"
    else:
        labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
        loss_fn, weight_name = F.cross_entropy, "weight"
    inputs = {key: value for key, value in _batch(tokenizer).items() if key != "labels"}
    with torch.no_grad():
        logits = model(**inputs).logits
        loss = model(**inputs, labels=labels).loss
    expected = loss_fn(logits, labels, **{weight_name: weights})
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() != pytest.approx(loss_fn(logits, labels).item(), rel=1e-3)  # the weights matter on this batch


def test_an_eval_label_training_never_saw_is_a_clear_error(tmp_path):
    rows = {
        "train": _rows(4, lambda i: {"label": ("yes", "no")[i % 2]}),
        "test": _rows(3, lambda i: {"label": ("yes", "maybe", "no")[i]}),
    }
    with pytest.raises(
        DataError,
        match=r"split 'eval': 1 row\(s\) have labels that the training split does not have "
        r"\(row 1: \['maybe'\]\)\. Known labels: \['no', 'yes'\]",
    ):
        _prepare(_write_rows(tmp_path / "d", rows))


@pytest.mark.parametrize(
    "record, message",
    [({"text": "x"}, r"line 1: missing field 'labels' or 'label'"), ({"label": "a"}, r"line 1: missing field 'text'")],
)
def test_missing_fields_name_the_file_and_line(tmp_path, record, message):
    rows = {"train": _rows(2, lambda i: {"label": "a"}), "test": _rows(2, lambda i: {"label": "a"})}
    root = _write_rows(tmp_path / "d", rows)
    (root / "train" / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", **record}) + "\n")
    with pytest.raises(DataError, match=message):
        _prepare(root)


def test_label_order_is_numeric_for_numbers():
    assert label_order({"10", "2", "1"}) == ["1", "2", "10"] and label_order({"b", "a"}) == ["a", "b"]


def test_every_registered_task_declares_what_the_training_path_asks():
    for name, task in TASKS.items():
        assert get_task(name) is task and task.name == name
        assert task.columns and task.card.metrics and task.pipeline_task and task.default_dataset
        assert task.auto_class._model_mapping[mmft.MMFTConfig] is task.model_class


def test_a_saved_config_finds_its_task_by_architectures_only():
    config = mmft.MMFTConfig(architectures=["MMFTForImageTextClassification"])
    assert task_for_model(config) is TASKS["classification"]
    with pytest.raises(ValueError, match=r"names no model class \(its `architectures` is empty\)"):
        task_for_model(mmft.MMFTConfig())  # no longer read as a VQA model


# -- presets -----------------------------------------------------------------------------------------------------
def test_a_preset_extends_its_base_and_overrides_it(tmp_path):
    (tmp_path / "base.yaml").write_text("learning_rate: 0.1\nnum_train_epochs: 3\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nnum_train_epochs: 5\n")
    assert load_preset(tmp_path / "child.yaml") == {"learning_rate": 0.1, "num_train_epochs": 5}
    (tmp_path / "base.yaml").write_text("base: child.yaml\n")
    with pytest.raises(ValueError, match="presets extend each other in a loop"):
        load_preset(tmp_path / "child.yaml")


def test_naming_another_tower_drops_the_presets_keys_for_the_old_one(caplog):
    preset = {
        "vision_model": "timm:resnet10t",
        "vision_model_args": {"features_only": True},
        "image_size": 64,
        "text_model": "minilm",
        "text_model_args": {"hidden_dropout_prob": 0.0},
    }
    with caplog.at_level(logging.WARNING, logger="mmft"):
        kept = drop_other_towers_keys(preset, ["--vision_model", "timm/vit_base_patch16_224"], "easy_vqa.yaml")
    assert "vision_model_args" not in kept and "image_size" not in kept and kept["text_model_args"]
    assert "replaces easy_vqa.yaml's vision_model 'timm:resnet10t', so its vision_model_args=" in caplog.text
    assert drop_other_towers_keys(preset, ["--vision_model", "x", "--image_size", "32"], "p")["image_size"] == 64
    assert drop_other_towers_keys(preset, ["--vision_model=timm:resnet10t"], "p") == preset  # same tower: kept


def test_a_cpu_process_given_one_thread_uses_its_share_of_the_cores(monkeypatch, caplog):
    from types import SimpleNamespace

    from mmft.training import use_cpu_cores

    cpu = SimpleNamespace(device=torch.device("cpu"))
    before = torch.get_num_threads()
    monkeypatch.delenv("MMFT_CPU_THREADS", raising=False)  # set for pytest-xdist workers (conftest)
    try:
        monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        torch.set_num_threads(1)  # what `accelerate launch` without a thread count gives
        with caplog.at_level(logging.WARNING, logger="mmft"):
            assert use_cpu_cores(cpu) == 2 == torch.get_num_threads()  # 4 cores / 2 processes
        assert "had 1 thread(s); using 2 (4 cores / 2 process(es)" in caplog.text
        torch.set_num_threads(3)  # a larger count the user gave is kept
        assert use_cpu_cores(cpu) == 3
        monkeypatch.setenv("MMFT_CPU_THREADS", "1")  # and the variable decides outright
        assert use_cpu_cores(cpu) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
