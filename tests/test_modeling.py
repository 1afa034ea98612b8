"""The composite model on tiny random towers: shapes, learning, save/load, Auto classes, config validation."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import ANSWERS, VISION_KINDS, tiny_model, tiny_text_config, tiny_vision_config
from transformers import AutoConfig, AutoModel, AutoModelForVisualQuestionAnswering

import mmft
from mmft import BRIDGES, MMFTConfig, MMFTModel
from mmft.training import tower_provenance


@pytest.mark.parametrize("vision", VISION_KINDS)
@pytest.mark.parametrize("bridge", sorted(BRIDGES))
def test_forward_shapes_every_bridge_and_vision_tower(bridge, vision, batch):
    model = tiny_model(bridge, vision).eval()
    out = model(**batch, output_attentions=True)
    assert out.logits.shape == (8, len(ANSWERS))
    assert out.pooled.shape == (8, model.core.bridge.pooled_size)
    assert torch.isfinite(out.loss)
    if BRIDGES[bridge].uses_attention:
        image_tokens = model.core(batch["pixel_values"], batch["input_ids"]).image_states.shape[1]
        assert len(out.cross_attentions) == model.config.num_bridge_layers
        assert out.cross_attentions[0].shape == (8, 2, batch["input_ids"].shape[1], image_tokens)
        # attention rows are distributions over image tokens
        torch.testing.assert_close(out.cross_attentions[0].sum(-1), torch.ones(8, 2, batch["input_ids"].shape[1]))
    else:
        assert out.cross_attentions is None


def test_roberta_text_tower(batch):
    model = tiny_model("co_attention", "hf_vit", text="roberta").eval()
    assert model(**batch).logits.shape == (8, len(ANSWERS))


def test_soft_score_labels_use_scaled_bce(batch):
    model = tiny_model().eval()
    soft = torch.zeros(8, len(ANSWERS))
    soft[torch.arange(8), batch["labels"]] = 1.0
    logits = model(**{**batch, "labels": None}).logits
    loss = model(**{**batch, "labels": soft}).loss
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, soft, reduction="sum") / 8
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("bridge", sorted(BRIDGES))
def test_overfits_a_fixed_batch_in_30_steps(bridge, batch):
    model = tiny_model(bridge, "timm_vit").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], f"{bridge}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("vision", ["timm_cnn", "clip_vision"])
def test_save_load_round_trip_is_bit_equal_through_auto_classes(vision, batch, tmp_path):
    model = tiny_model("co_attention", vision).eval()
    expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MMFTConfig)
    loaded = AutoModelForVisualQuestionAnswering.from_pretrained(tmp_path).eval()
    assert type(loaded) is mmft.MMFTForVisualQuestionAnswering
    assert torch.equal(loaded(**batch).logits, expected)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is MMFTModel
    assert torch.equal(
        base(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]).pooled,
        model.core(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]).pooled,
    )


def test_round_trip_negative_control_detects_a_changed_weight(batch, tmp_path):
    """The bit-equality check above can fail: perturb one bridge weight after saving and it does."""
    model = tiny_model().eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForVisualQuestionAnswering.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        loaded.core.bridge.text_blocks[0].ffn[0].weight[0, 0] += 1e-3
    assert not torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_frozen_text_cache_is_exact_and_skipped_when_text_trains(batch):
    model = tiny_model()
    for parameter in model.core.text_tower.parameters():
        parameter.requires_grad = False
    model.train()
    assert not model.core.text_tower.training  # a frozen tower stays in eval mode
    uncached = model.core._encode_text(batch["input_ids"], batch["attention_mask"])
    model.core.enable_frozen_text_cache()
    first = model.core._encode_text(batch["input_ids"], batch["attention_mask"])
    assert len(model.core._text_cache) == 4  # 8 rows, 4 distinct questions
    torch.testing.assert_close(first, uncached)
    model.core.text_tower.model.embeddings.word_embeddings.weight.requires_grad = True
    with torch.no_grad():
        model.core.text_tower.model.embeddings.word_embeddings.weight.mul_(2)
    changed = model.core._encode_text(batch["input_ids"], batch["attention_mask"])
    assert not torch.allclose(changed, first)  # trainable tower: cache bypassed, new weights used


def test_offline_pair_builds_and_keeps_pretrained_text_weights():
    from mmft.towers import resolve_name

    model = mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
        vision="timm:vit_tiny_patch16_224",
        text="minilm",
        vision_model_args={"img_size": 32, "patch_size": 8, "depth": 1},
        labels=ANSWERS,
    )
    assert model.config.text_pretrained_from == "minilm" and model.config.vision_pretrained_from is None
    reference = AutoModel.from_pretrained(resolve_name("minilm")).state_dict()
    tower = model.core.text_tower.model.state_dict()
    assert all(torch.equal(reference[name], value) for name, value in tower.items())
    # What the recipe prints at start-up, so nobody mistakes the random vision tower for a pretrained one.
    assert tower_provenance(model.config) == (
        "vision tower: trained from scratch (random init); text tower: pretrained (minilm)"
    )


def test_text_model_args_override_tower_config_fields_and_reject_unknown_ones():
    kwargs = dict(vision="timm:vit_tiny_patch16_224", vision_model_args={"img_size": 32, "patch_size": 8, "depth": 1})
    model = mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
        text="minilm", text_model_args={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}, **kwargs
    )
    assert model.config.text_config.hidden_dropout_prob == 0.0
    dropouts = [m.p for m in model.core.text_tower.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(p == 0.0 for p in dropouts)
    with pytest.raises(ValueError, match="'hidden_dropout' is not a field of the bert config.*hidden_dropout_prob"):
        mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
            text="minilm", text_model_args={"hidden_dropout": 0.0}, **kwargs
        )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"bridge": "transformer"}, "unknown bridge 'transformer'; known: co_attention, concat"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "must be divisible by num_attention_heads"),
        ({"num_bridge_layers": 0}, "needs num_bridge_layers >= 1"),
        ({"hidden_dropout": 1.0}, "hidden_dropout must be in [0, 1)"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"rerank_score": "itm"}, "unknown rerank_score 'itm'; known: match+similarity, match"),
        ({"bridge_attn_implementation": "flash"}, "unknown bridge_attn_implementation 'flash'; known: sdpa, eager"),
    ],
)
def test_invalid_configs_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MMFTConfig(vision_config=tiny_vision_config("hf_vit"), text_config=tiny_text_config(), **overrides)


def test_the_eager_bridge_attention_computes_what_sdpa_does_without_calling_it(batch, monkeypatch, tmp_path):
    """`bridge_attn_implementation="eager"` (explicit softmax: the faster backward on the CPU) gives sdpa's outputs
    and gradients, never calls `scaled_dot_product_attention`, and survives a save and reload."""
    calls = []

    class CountingFunctional:  # the bridge's own `F`: counts its sdpa calls (the towers' are not the bridge's)
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        def scaled_dot_product_attention(self, *args, **kwargs):
            calls.append(1)
            return torch.nn.functional.scaled_dot_product_attention(*args, **kwargs)

    monkeypatch.setattr(mmft.bridge, "F", CountingFunctional())
    results = {}
    for implementation in ("sdpa", "eager"):
        model = tiny_model(seed=5, bridge_attn_implementation=implementation)
        calls.clear()
        loss = model(**batch).loss
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results[implementation] = (loss.detach(), grads, len(calls))
    assert results["sdpa"][2] > 0 and results["eager"][2] == 0
    torch.testing.assert_close(results["eager"][0], results["sdpa"][0], rtol=1e-5, atol=1e-6)
    assert results["eager"][1].keys() == results["sdpa"][1].keys()
    for name, grad in results["sdpa"][1].items():
        torch.testing.assert_close(results["eager"][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    model.save_pretrained(tmp_path)
    assert mmft.MMFTForVisualQuestionAnswering.from_pretrained(tmp_path).config.bridge_attn_implementation == "eager"


def test_missing_towers_and_bad_vocab_are_clear_errors():
    with pytest.raises(ValueError, match="needs both vision_config and text_config"):
        MMFTModel(MMFTConfig())
    with pytest.raises(ValueError, match="labels must be unique"):
        mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
            vision=tiny_vision_config("hf_vit"), text=tiny_text_config(), labels=["yes", "yes"]
        )
    with pytest.raises(ValueError, match="unknown timm architecture"):
        mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
            vision="timm:not_a_model", text=tiny_text_config(), labels=ANSWERS
        )
    with pytest.raises(TypeError, match="no longer takes answers=; pass the answer vocabulary as labels="):
        mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
            vision=tiny_vision_config("hf_vit"), text=tiny_text_config(), answers=ANSWERS
        )
