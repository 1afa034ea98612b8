"""Fine-tuning pretrained towers: per-part learning rates with layer-wise decay, training-time augmentation, and the
frozen-text cache bounded by bytes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import TINY_TIMM_VIT, tiny_model, tiny_text_config
from helpers_data import attach_vqa, make_imagefolder, prepare_vqa
from helpers_launch import log_history, run_in_process, save_tiny_text_tower, weights
from transformers import TrainingArguments

from mmft import LoraPlan
from mmft.data.augment import TrainAugmentation, make_augmentation
from mmft.data.collator import set_train_augmentation
from mmft.param_groups import block_index, describe_groups
from mmft.processing_mmft import MMFTProcessor
from mmft.towers import vision_config_from_name
from mmft.trainer import MMFTTrainer

LR, TOWER_LR, DECAY, WEIGHT_DECAY = 1e-3, 1e-4, 0.5, 0.01


def two_layer_model():
    """timm ViT (2 blocks) + BERT (2 layers), both fully trained."""
    vision = vision_config_from_name("timm:vit_tiny_patch16_224", {**TINY_TIMM_VIT, "depth": 2})
    text = tiny_text_config()
    text.num_hidden_layers = 2
    return tiny_model(vision=vision, text=text)


def optimizer_of(model, tmp_path, **options):
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, learning_rate=LR, weight_decay=WEIGHT_DECAY, report_to="none"
    )
    trainer = MMFTTrainer(model=model, args=args, **options)
    return trainer, trainer.create_optimizer()


def lr_of(model, optimizer) -> dict[str, float]:
    by_id = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters() if id(p) in by_id}


@pytest.mark.parametrize(
    ("name", "block"),
    [
        ("model.embeddings.word_embeddings.weight", None),
        ("model.encoder.layer.3.output.dense.weight", 4),
        ("model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight", 1),
        ("model.timm_model.blocks.0.attn.qkv.weight", 1),
        ("model.timm_model.stages.1.blocks.2.conv_dw.weight", 2),  # ConvNeXt: by stage
        ("model.timm_model.blocks.5.0.conv_pw.weight", 6),  # EfficientNet: by stage
        ("model.timm_model.layer2.0.conv1.weight", 2),  # ResNet: layer1..layer4
        ("model._fsdp_wrapped_module.encoder.layer.1.attention.self.query.weight", 2),
        ("model.transformer.h.11.mlp.c_fc.weight", 12),
        ("model.encoder.layer.0.attention.output.LayerNorm.weight", 1),
    ],
)
def test_block_index_of_each_tower_family(name, block):
    assert block_index(name) == block


def test_without_the_flags_every_group_shares_one_learning_rate(tmp_path):
    model = two_layer_model()
    _, optimizer = optimizer_of(model, tmp_path)
    assert {group["lr"] for group in optimizer.param_groups} == {LR}
    assert len(optimizer.param_groups) == 2  # the Trainer's own: with and without weight decay
    assert describe_groups(optimizer.param_groups) == []  # nothing for the card to list


def test_tower_learning_rate_for_tower_weights_only(tmp_path):
    model = two_layer_model()
    _, optimizer = optimizer_of(model, tmp_path, tower_learning_rate=TOWER_LR)
    rates = lr_of(model, optimizer)
    assert len(rates) == sum(p.requires_grad for p in model.parameters())  # every trainable parameter, once
    for name, lr in rates.items():
        tower = ".vision_tower." in f".{name}" or ".text_tower." in f".{name}"
        assert lr == (TOWER_LR if tower else LR), name
    assert rates["mmft.bridge.text_blocks.0.ffn.0.weight"] == LR
    assert rates["mmft.vision_projection.weight"] == LR
    # HF's weight-decay split is kept inside each part: biases and norms without decay
    decays = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert decays[id(named["mmft.text_tower.model.encoder.layer.0.output.dense.weight"])] == WEIGHT_DECAY
    assert decays[id(named["mmft.text_tower.model.encoder.layer.0.output.dense.bias"])] == 0.0
    assert decays[id(named["mmft.text_tower.model.encoder.layer.0.output.LayerNorm.weight"])] == 0.0
    assert decays[id(named["mmft.bridge.text_blocks.0.ffn.0.bias"])] == 0.0
    names = {name for name, _, _ in describe_groups(optimizer.param_groups)}
    assert names == {"vision tower", "text tower", "new modules"}


def test_layer_decay_by_layer(tmp_path):
    model = two_layer_model()
    _, optimizer = optimizer_of(model, tmp_path, tower_learning_rate=TOWER_LR, layer_decay=DECAY)
    rates = lr_of(model, optimizer)
    vision, text = "mmft.vision_tower.model.timm_model.", "mmft.text_tower.model."
    expected = {
        vision + "cls_token": TOWER_LR * DECAY**2,  # before the first block: layer 0 of 2, the lowest
        vision + "patch_embed.proj.weight": TOWER_LR * DECAY**2,
        vision + "blocks.0.attn.qkv.weight": TOWER_LR * DECAY,
        vision + "blocks.1.mlp.fc2.weight": TOWER_LR,
        vision + "norm.weight": TOWER_LR,  # after the last block: with it
        text + "embeddings.word_embeddings.weight": TOWER_LR * DECAY**2,
        text + "encoder.layer.0.attention.self.query.weight": TOWER_LR * DECAY,
        text + "encoder.layer.1.output.dense.bias": TOWER_LR,
        "mmft.bridge.text_blocks.0.ffn.0.weight": LR,
        "mmft.text_projection.weight": LR,
        "classifier.0.weight": LR,
    }
    for name, lr in expected.items():
        assert rates[name] == pytest.approx(lr, rel=1e-12), name
    groups = {name: lr for name, _, lr in describe_groups(optimizer.param_groups)}
    assert groups["vision layer 0/2"] == pytest.approx(TOWER_LR * DECAY**2)
    assert groups["text layer 2/2"] == pytest.approx(TOWER_LR)


def test_lora_adapters_take_the_new_modules_rate_and_the_scheduler_scales_every_group(tmp_path):
    model = LoraPlan(vision="full", text="lora", r=4).apply(two_layer_model())
    trainer, optimizer = optimizer_of(model, tmp_path, tower_learning_rate=TOWER_LR, layer_decay=DECAY)
    rates = lr_of(model, optimizer)
    lora = {name: lr for name, lr in rates.items() if "lora_" in name}
    assert lora and set(lora.values()) == {LR}
    assert not any(".text_tower." in n and "lora_" not in n for n in rates)  # frozen text weights: not optimised
    qkv = "base_model.model.mmft.vision_tower.original_module.model.timm_model.blocks.0.attn.qkv.weight"
    assert rates[qkv] == pytest.approx(TOWER_LR * DECAY)  # a full tower under peft: still by layer
    assert rates["base_model.model.classifier.original_module.0.weight"] == LR
    # the HF scheduler scales each group by the same factor: the ratios hold through warmup and decay
    trainer.args.lr_scheduler_type, trainer.args.warmup_steps = "linear", 2
    scheduler = trainer.create_scheduler(10, optimizer)
    optimizer.step()
    scheduler.step()
    factors = {round(group["lr"] / group["initial_lr"], 12) for group in optimizer.param_groups}
    assert len(factors) == 1 and 0 < factors.pop() < 1


def test_groups_under_qlora(tmp_path):
    model = LoraPlan(vision="full", text="lora", r=4, quantize="4bit").apply(two_layer_model())
    _, optimizer = optimizer_of(model, tmp_path, tower_learning_rate=TOWER_LR, layer_decay=DECAY)
    groups = {name: lr for name, _, lr in describe_groups(optimizer.param_groups)}
    assert groups == pytest.approx(
        {
            "vision layer 0/2": TOWER_LR * DECAY**2,
            "vision layer 1/2": TOWER_LR * DECAY,
            "vision layer 2/2": TOWER_LR,
            "lora adapters": LR,
            "new modules": LR,
        }
    )  # the quantized text tower's weights are frozen: in no group


# -- augmentation -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vqa_data(tmp_path_factory):
    root = make_imagefolder(tmp_path_factory.mktemp("augment") / "data", n_train=8, n_test=4)
    processor = MMFTProcessor.from_vision_text_pretrained(
        "timm:vit_tiny_patch16_224", "minilm", 32, {"img_size": 32, "patch_size": 8}
    )
    return root, processor


def pixels(vqa_data, augment: TrainAugmentation | None) -> tuple[torch.Tensor, torch.Tensor]:
    root, processor = vqa_data
    data = attach_vqa(prepare_vqa(root), processor)
    set_train_augmentation(data.train, augment)
    train = torch.stack([row["pixel_values"] for row in data.train])
    evaluation = torch.stack([row["pixel_values"] for row in data.eval])
    return train, evaluation


def test_augmentation_changes_training_images_only(vqa_data):
    plain_train, plain_eval = pixels(vqa_data, None)
    state = torch.get_rng_state()
    train, evaluation = pixels(vqa_data, make_augmentation("light", seed=0))
    assert torch.equal(torch.get_rng_state(), state)  # dropout's generator is left as it was
    assert torch.equal(evaluation, plain_eval)
    assert all(not torch.equal(a, b) for a, b in zip(train, plain_train))
    again, _ = pixels(vqa_data, make_augmentation("light", seed=0))
    assert torch.equal(again, train)  # the same draws for the same (seed, epoch, row)
    next_epoch = make_augmentation("light", seed=0)
    next_epoch.epoch = 1
    assert not torch.equal(pixels(vqa_data, next_epoch)[0], train)


def test_augmentation_policies_never_flip_unless_asked():
    assert "no horizontal flip" in TrainAugmentation("light").describe()
    steps = [type(step).__name__ for step in TrainAugmentation("light").transform((24, 24)).transforms]
    assert steps == ["RandomResizedCrop", "ColorJitter"]
    jitter = TrainAugmentation("light").transform((24, 24)).transforms[1]
    assert jitter.hue is None and jitter.saturation is None
    assert "RandomHorizontalFlip" in str(TrainAugmentation("crop", flip=True).transform((24, 24)))
    assert make_augmentation("none") is None


# -- frozen-text cache --------------------------------------------------------------------------------------------
def test_frozen_text_cache_is_bounded_by_bytes_and_exact(batch):
    model = tiny_model()
    core = model.core
    core.text_tower.requires_grad_(False)
    model.eval()
    uncached = core._encode_text(batch["input_ids"], batch["attention_mask"])
    entry = uncached[0].numel() * uncached[0].element_size()  # one padded row: tokens x hidden x 4 B
    core.enable_frozen_text_cache(max_mb=2.5 * entry / 2**20)  # room for two entries, not three
    first = core._encode_text(batch["input_ids"], batch["attention_mask"])  # 4 distinct questions
    cache = core._text_cache
    assert len(cache) == 2 and cache.bytes == 2 * entry <= cache.max_bytes
    assert cache.evictions == 2
    torch.testing.assert_close(first, uncached, rtol=0, atol=0)
    hits = cache.hits
    second = core._encode_text(batch["input_ids"], batch["attention_mask"])  # hits and misses mixed
    torch.testing.assert_close(second, uncached, rtol=0, atol=0)
    assert cache.hits > hits and len(cache) == 2
    core.enable_frozen_text_cache(max_mb=0.5 * entry / 2**20)  # smaller than one entry: nothing is kept
    torch.testing.assert_close(core._encode_text(batch["input_ids"], batch["attention_mask"]), uncached)
    assert len(core._text_cache) == 0


def test_frozen_text_cache_evicts_the_least_recently_used():
    from mmft.text_cache import FrozenTextCache

    cache = FrozenTextCache(max_bytes=3 * 16)
    for key in (b"a", b"b", b"c"):
        cache.put(key, torch.zeros(4))  # 16 bytes each
    cache.get(b"a")  # now the most recently used
    cache.put(b"d", torch.zeros(4))
    assert b"b" not in cache and all(key in cache for key in (b"a", b"c", b"d")) and cache.bytes == 48


# -- a run: card, and exact resume with augmentation on ---------------------------------------------------------
RUN = [
    "--lora_vision",
    "full",
    "--lora_text",
    "full",
    "--per_device_train_batch_size",
    "4",
    "--max_steps",
    "8",
    "--save_strategy",
    "steps",
    "--save_steps",
    "4",
    "--save_total_limit",
    "2",
    "--hidden_dropout",
    "0.1",
    "--seed",
    "0",
    "--tower_learning_rate",
    "1e-4",
    "--layer_decay",
    "0.5",
    "--augment",
    "light",
]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, one_cpu_thread):
    root = tmp_path_factory.mktemp("finetune_run")
    inputs = save_tiny_text_tower(root / "bert", dropout=0.1), make_imagefolder(root / "data")
    output_dir = root / "reference"
    run_in_process(output_dir, *inputs, *RUN)
    return output_dir, inputs


def test_the_card_records_learning_rates_and_augmentation(reference_run):
    output_dir, _ = reference_run
    card = (output_dir / "README.md").read_text()
    assert "Training-time augmentation: `light`: RandomResizedCrop" in card
    assert "no horizontal flip" in card
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in card.splitlines() if "layer" in line}
    assert rows["vision layer 0/1"] == rows["text layer 0/1"] == "5e-05"  # 1e-4 x 0.5^(1 - 0): the embeddings
    assert rows["vision layer 1/1"] == rows["text layer 1/1"] == "0.0001"
    assert "| new modules |" in card and "| 0.001 |" in card


def test_a_resumed_run_with_augmentation_is_bit_identical(reference_run, tmp_path, one_cpu_thread):
    reference, inputs = reference_run
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(reference / "checkpoint-4", resumed / "checkpoint-4")  # mid-epoch 0 (6 steps per epoch)
    run_in_process(resumed, *inputs, *RUN, "--resume_from_checkpoint", str(resumed / "checkpoint-4"))
    ours, theirs = weights(resumed / "model.safetensors"), weights(reference / "model.safetensors")
    unequal = [key for key in ours if not torch.equal(ours[key], theirs[key])]
    assert not unequal, unequal[:3]
    assert log_history(resumed / "checkpoint-8") == log_history(reference / "checkpoint-8")
    assert (
        json.loads((resumed / "test_results.json").read_text()).keys()
        == json.loads((reference / "test_results.json").read_text()).keys()
    )
