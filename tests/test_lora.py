"""LoraPlan: per-tower trainable counts, target resolution across tower families, merge equivalence."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TINY_TIMM_VIT, tiny_model, tiny_text_config, tiny_vision_config, train_steps
from torch import nn
from transformers import AutoModelForVisualQuestionAnswering

from mmft import LoraPlan
from mmft.lora import tower_names
from mmft.towers import vision_config_from_name

# README.md ("LoRA plans"), spelled out per tower family: the Linear layers of every transformer block, named from the
# block down, that get adapters with targets="attention", and those that "attention+mlp" adds. Written out rather
# than derived with mmft.lora's own name rules, so that the tests check those rules against the documented names.
TIMM_VIT = (["attn.qkv", "attn.proj"], ["mlp.fc1", "mlp.fc2"])
HF_VIT = (["attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"], ["mlp.fc1", "mlp.fc2"])
CLIP = (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"], ["mlp.fc1", "mlp.fc2"])
BERT = (
    ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"],
    ["intermediate.dense", "output.dense"],
)
LLAMA = (
    ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"],
    ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
)
LORA_TARGETS = {
    # family: (the plan's slot for it, its per-block targets)
    "timm ViT": ("vision", TIMM_VIT),
    "timm ViT, attention-pool head": ("vision", TIMM_VIT),  # the pool's mlp.fc1/fc2 never run (no pooling): no LoRA
    "HF ViT": ("vision", HF_VIT),  # transformers 5 names (query/key/value in checkpoints, q_proj/... in memory)
    "DINOv2": ("vision", HF_VIT),
    "CLIP vision": ("vision", CLIP),
    "SigLIP vision": ("vision", CLIP),  # not its attention-pooling head: its output is dropped
    "BERT": ("text", BERT),
    "RoBERTa": ("text", BERT),
    "Llama decoder": ("decoder", LLAMA),  # SmolLM2's architecture
}
BLOCKS = 2  # every block must get them, not just the first
_BLOCK = re.compile(r"(?:^|\.)(?:blocks|layers?)\.(\d+)\.(.+)$")


def _two_block_model(family: str) -> nn.Module:
    """A tiny random model with the tower of `family` at `BLOCKS` blocks (the others tiny defaults)."""
    if family == "Llama decoder":
        from helpers_captioning import tiny_caption_model, tiny_decoder_config

        config = tiny_decoder_config()
        config.num_hidden_layers = BLOCKS
        return tiny_caption_model(decoder=config)
    if family.startswith("timm ViT"):
        pool = {"global_pool": "map"} if "attention-pool" in family else {}
        return tiny_model(
            vision=vision_config_from_name("timm:vit_tiny_patch16_224", {**TINY_TIMM_VIT, "depth": BLOCKS, **pool})
        )
    kinds = {
        "HF ViT": "hf_vit",
        "DINOv2": "dinov2",
        "CLIP vision": "clip_vision",
        "SigLIP vision": "siglip_vision",
        "BERT": "bert",
        "RoBERTa": "roberta",
    }
    slot = LORA_TARGETS[family][0]
    config = (tiny_vision_config if slot == "vision" else tiny_text_config)(kinds[family])
    config.num_hidden_layers = BLOCKS
    return tiny_model(**{slot: config})


def _wanted(family: str, targets: str) -> list[str]:
    """The in-block names of `family`'s layers that LORA_TARGETS lists for `targets`."""
    attention, mlp = LORA_TARGETS[family][1]
    return attention + mlp if targets == "attention+mlp" else attention


@pytest.mark.parametrize("targets", ["attention", "attention+mlp"])
@pytest.mark.parametrize("family", LORA_TARGETS)
def test_lora_targets_are_the_documented_layers_of_every_block(family, targets):
    slot = LORA_TARGETS[family][0]
    plan = LoraPlan(
        **{tower: "lora" if tower == slot else "frozen" for tower in ("vision", "text", "decoder")},
        targets=targets,
        r=2,
    )
    model = plan.apply(_two_block_model(family))
    prefix = tower_names(model)[slot] + "."
    adapted = [
        name[len(prefix) :]
        for name, module in model.named_modules()
        if name.startswith(prefix) and hasattr(module, "lora_A")
    ]  # peft's LoRA layers
    # (block, name in the block) of every adapted layer; one outside a block keeps its whole name and cannot match
    got = {(int(m.group(1)), m.group(2)) if (m := _BLOCK.search(name)) else (None, name) for name in adapted}
    assert got == {(block, name) for block in range(BLOCKS) for name in _wanted(family, targets)}


def _expected_lora_count(tower: nn.Module, r: int, targets: str, family: str) -> int:
    """Independent count: r * (in + out) for every Linear of the tower that LORA_TARGETS lists for `targets`."""
    return sum(
        r * (module.in_features + module.out_features)
        for name, module in tower.named_modules()
        if isinstance(module, nn.Linear)
        and (found := _BLOCK.search(name))
        and found.group(2) in _wanted(family, targets)
    )


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "vision_kind, family", [("hf_vit", "HF ViT"), ("timm_vit", "timm ViT"), ("clip_vision", "CLIP vision")]
)
@pytest.mark.parametrize("targets", ["attention", "attention+mlp"])
def test_trainable_counts_per_tower(vision_kind, family, targets):
    model = tiny_model("co_attention", vision_kind)
    expected_vision = _expected_lora_count(model.core.vision_tower, 4, targets, family)
    expected_rest = _n(model) - _n(model.core.vision_tower) - _n(model.core.text_tower)
    expected_text = _n(model.core.text_tower)
    counts = LoraPlan.trainable_parameters(LoraPlan(vision="lora", text="full", r=4, targets=targets).apply(model))
    assert counts == {"vision": expected_vision, "text": expected_text, "bridge+head": expected_rest}
    assert expected_vision > 0


def test_frozen_towers_train_nothing_and_plain_plans_skip_peft():
    model = tiny_model("concat", "timm_cnn")
    planned = LoraPlan(vision="full", text="frozen").apply(model)
    assert planned is model  # no adapters needed
    counts = LoraPlan.trainable_parameters(planned)
    assert counts["text"] == 0 and counts["vision"] == _n(model.core.vision_tower)


def test_lora_on_a_tower_without_targets_is_an_error():
    with pytest.raises(ValueError, match="matches no layer of the vision tower .*resnet10t.*vision='full'"):
        LoraPlan(vision="lora", text="frozen").apply(tiny_model("co_attention", "timm_cnn"))


@pytest.mark.parametrize("field, value", [("vision", "qlora"), ("text", "train"), ("targets", "mlp"), ("r", 0)])
def test_invalid_plans_fail_at_construction(field, value):
    with pytest.raises(ValueError, match=field):
        LoraPlan(**{field: value})


def test_plan_slots_are_the_registered_tower_kinds():
    from dataclasses import fields

    from mmft.lora import TOWERS
    from mmft.towers import TOWER_SPECS

    assert TOWERS == tuple(TOWER_SPECS) == ("vision", "text", "decoder")
    assert set(TOWERS) <= {field.name for field in fields(LoraPlan)}
    with pytest.raises(TypeError, match="decoder"):
        LoraPlan(decoder2="lora")  # not a slot: refused at construction


def test_a_model_tower_of_an_unregistered_kind_is_refused():
    """A tower kind without a spec has no plan slot: planning it would silently leave it untouched."""
    model = tiny_model("co_attention", "hf_vit")
    model.towers = lambda: {"vision": model.core.vision_tower, "audio": model.core.text_tower}
    with pytest.raises(ValueError, match=r"tower kind\(s\) \['audio'\].*known: vision, text, decoder"):
        LoraPlan().apply(model)


def _train_a_little(model, batch, steps=5):
    train_steps(model, batch, steps)
    return model.eval()


def test_merge_matches_lora_model_and_save_load_keeps_every_trained_weight(batch, tmp_path):
    model = tiny_model("co_attention", "hf_vit")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = _train_a_little(LoraPlan(vision="lora", text="full", r=4).apply(model), batch)
    with torch.no_grad():
        expected = peft_model(**batch).logits
        merged = LoraPlan.merge(peft_model).eval()
        assert (merged(**batch).logits - expected).abs().max() <= 1e-5
    # every part changed by training: merged LoRA (vision), full text tower, bridge, head
    state = merged.state_dict()
    for key in (
        "mmft.vision_tower.model.layers.0.attention.q_proj.weight",
        "mmft.text_tower.model.encoder.layer.0.output.dense.weight",
        "mmft.bridge.text_blocks.0.ffn.0.weight",
        "classifier.3.weight",
    ):
        assert not torch.equal(state[key], initial[key]), key
    merged.save_pretrained(tmp_path)
    loaded = AutoModelForVisualQuestionAnswering.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (loaded(**batch).logits - expected).abs().max() <= 1e-5


def test_merge_negative_control_unmerged_base_differs(batch):
    """Dropping the adapters instead of merging them loses training: the equivalence check notices."""
    peft_model = _train_a_little(LoraPlan(vision="lora", text="lora", r=4).apply(tiny_model()), batch)
    with torch.no_grad():
        expected = peft_model(**batch).logits
        unloaded = peft_model.unload().eval()  # peft's unload() removes LoRA without merging it
        assert (unloaded(**batch).logits - expected).abs().max() > 1e-3


def test_merge_keeps_every_trained_weight_of_a_captioning_model(tmp_path):
    """The decoder slot: LoRA on the decoder and the vision tower, the text tower in full; merged == adapted, and
    every part that trained (decoder adapters, vision adapters, text tower, bridge, prefix) differs from the start."""
    from helpers_captioning import scenes_rows, tiny_caption_model, tiny_caption_processor
    from transformers import AutoModelForImageTextToText

    images, _ = scenes_rows(4)
    batch = dict(
        tiny_caption_processor()(
            images=images, text=["a red circle", "a blue square on the left", "two shapes", "a tiny cross"]
        )
    )
    model = tiny_caption_model(vision="hf_vit")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = _train_a_little(LoraPlan(vision="lora", text="full", decoder="lora", r=4).apply(model), batch)
    with torch.no_grad():
        expected = peft_model(**batch).logits
        merged = LoraPlan.merge(peft_model).eval()
        assert (merged(**batch).logits - expected).abs().max() <= 1e-5
    state = merged.state_dict()
    for key in (
        "decoder.model.model.layers.0.self_attn.q_proj.weight",
        "mmft.vision_tower.model.layers.0.attention.q_proj.weight",
        "mmft.text_tower.model.encoder.layer.0.output.dense.weight",
        "mmft.bridge.image_blocks.0.ffn.0.weight",
        "caption_prefix.projection.weight",
        "caption_prefix.queries.weight",
    ):
        assert not torch.equal(state[key], initial[key]), key
    assert torch.equal(state["decoder.model.lm_head.weight"], initial["decoder.model.lm_head.weight"])  # not planned
    merged.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (loaded(**batch).logits - expected).abs().max() <= 1e-5
    # negative control: dropping the decoder's adapters instead of merging them loses their training
    unmerged = _train_a_little(
        LoraPlan(vision="frozen", text="frozen", decoder="lora", r=4).apply(tiny_caption_model(vision="hf_vit")), batch
    )
    with torch.no_grad():
        adapted = unmerged(**batch).logits
        assert (unmerged.unload().eval()(**batch).logits - adapted).abs().max() > 1e-4


def _stored_parameters(model: nn.Module) -> int:
    """Parameters the model holds in memory, each tensor counted once however many names point at it."""
    return sum(p.numel() for p in {id(p): p for _, p in model.named_parameters(remove_duplicate=False)}.values())


def test_lora_keeps_no_second_copy_of_the_trained_modules(monkeypatch):
    """peft's modules_to_save would hold an original and a trained copy of bridge, projections, head (and a `full`
    tower); mmft trains them in place, so the LoRA model holds the base model plus the adapters and nothing else."""
    plan = LoraPlan(vision="lora", text="full", r=4)
    base = tiny_model("co_attention", "timm_vit")
    adapters = _expected_lora_count(base.core.vision_tower, 4, "attention", "timm ViT")
    assert _stored_parameters(plan.apply(tiny_model("co_attention", "timm_vit"))) == _n(base) + adapters
    monkeypatch.setattr("mmft.lora.train_in_place", lambda model: None)  # negative control: peft's own copies
    copied = _stored_parameters(plan.apply(tiny_model("co_attention", "timm_vit")))
    assert copied - (_n(base) + adapters) == _n(base) - _n(base.core.vision_tower)  # every non-LoRA part, twice


def test_lora_under_fsdp_gives_every_shardable_module_one_place(monkeypatch):
    """accelerate's FSDP2 walks `named_children` without de-duplicating and shards each layer it finds; a module held
    in both of peft's slots would be sharded twice (torch refuses). Under an FSDP launch the plan keeps peft's copy."""
    from accelerate.utils.fsdp_utils import get_module_children_bottom_up

    plan = LoraPlan(vision="lora", text="full", r=4)

    def repeated_modules() -> int:
        walked = get_module_children_bottom_up(plan.apply(tiny_model("co_attention", "timm_vit")))
        return len(walked) - len({id(m) for m in walked})

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert repeated_modules() == 0
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")  # negative control: in place, the walk meets modules twice
    assert repeated_modules() > 0
