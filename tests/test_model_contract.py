"""What every transformers model does, checked for `MMFTModel` and every task head (`helpers_contract.MODEL_CLASSES`).

1. every parameter mmft owns is initialised by `_init_weights` (a checkpoint lacking any one of them loads finite);
2. per-tower attention backends (`attn_implementation={"text_config": ..., "vision_config": ...}`) are honoured;
3. input embeddings delegate to the text tower: `resize_token_embeddings`, forward, save/load;
4. the output contract: `return_dict`, `output_hidden_states`, `output_attentions` and their config fields;
5. `torch.export` of the towers alone and of the whole model.
Each property has a negative control (a broken variant the same check rejects).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers_contract import (
    MODEL_CLASSES,
    class_id,
    inputs_for,
    main_output,
    mmft_owned_keys,
    text_inputs,
    tiny,
    token_config,
    token_tower,
    tower_prefixes,
    uninitialised_memory_is_nan,
)
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer
from transformers.utils import ModelOutput

import mmft
from mmft import BRIDGES, MMFTModel
from mmft.bridge import Attention
from mmft.towers import resolve_name

classes = pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=class_id)


def _without(saved: Path, keys: set[str], target: Path) -> Path:
    """A copy of the saved folder whose weights file lacks `keys` (a checkpoint from before they existed)."""
    target.mkdir()
    shutil.copy(saved / "config.json", target / "config.json")
    weights = load_file(saved / "model.safetensors")
    assert keys <= weights.keys()
    save_file({k: v for k, v in weights.items() if k not in keys}, target / "model.safetensors", {"format": "pt"})
    return target


def _one_layer(model_class):
    return tiny(model_class, num_bridge_layers=1)  # a second layer holds the same kinds of parameter again


def _uninitialised_after_load(model_class, saved: Path, tmp_path: Path) -> dict[str, str]:
    """Load `saved` once per mmft-owned key with that key removed; {key: what went wrong} for every failure."""
    reference = _one_layer(model_class).state_dict()  # what `saved` holds (on disk transformers renames tower keys)
    failures = {}
    for index, key in enumerate(mmft_owned_keys(_one_layer(model_class))):
        folder = _without(saved, {key}, tmp_path / f"missing-{index}")
        with uninitialised_memory_is_nan():
            loaded = model_class.from_pretrained(folder)
        value = loaded.state_dict()[key]
        clobbered = [k for k, v in loaded.state_dict().items() if k != key and not torch.equal(v, reference[k])]
        if not torch.isfinite(value).all():
            failures[key] = f"not finite after loading without it ({value.flatten()[:3].tolist()} ...)"
        elif clobbered:
            failures[key] = f"initialising it overwrote loaded weights {clobbered[:3]}"
    return failures


# -- 1. initialisation ----------------------------------------------------------------------------------------------
@classes
def test_every_mmft_parameter_is_initialised_when_a_checkpoint_lacks_it(model_class, tmp_path):
    model = _one_layer(model_class)
    owned = mmft_owned_keys(model)
    assert any(k.endswith("value_bias") for k in owned) and any("projection" in k for k in owned)
    assert not any(k.startswith(tower_prefixes(model)) for k in owned)
    model.save_pretrained(tmp_path / "saved")
    assert _uninitialised_after_load(model_class, tmp_path / "saved", tmp_path) == {}


def test_negative_control_a_parameter_init_skips_is_found(tmp_path, monkeypatch):
    """Break the bridge attention's own init (what mmft had before): the check names every value_bias, and such a
    model answers NaN."""
    model_class = mmft.MMFTForVisualQuestionAnswering  # its logits read the bridge (a retrieval model's do not)
    _one_layer(model_class).save_pretrained(tmp_path / "saved")
    monkeypatch.setattr(Attention, "reset_parameters", lambda self: None)
    failures = _uninitialised_after_load(model_class, tmp_path / "saved", tmp_path)
    assert failures and all(key.endswith("value_bias") for key in failures)
    assert "not finite" in next(iter(failures.values()))
    with uninitialised_memory_is_nan():
        broken = model_class.from_pretrained(_without(tmp_path / "saved", set(failures), tmp_path / "broken"))
    with torch.no_grad():
        assert torch.isnan(main_output(broken.eval()(**inputs_for(broken, labels=False)))).all()


def test_a_module_with_a_parameter_init_cannot_reach_is_refused():
    """A head that adds a bare parameter with no way to initialise it fails at construction, naming it."""

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.empty(1))

    class Broken(MODEL_CLASSES[-1]):
        def __init__(self, config, vision_tower=None, text_tower=None) -> None:
            super().__init__(config, vision_tower, text_tower)
            self.extra = Scale()
            self.post_init()

    with pytest.raises(TypeError, match=r"Scale holds parameter\(s\) \['scale'\].*reset_parameters"):
        tiny(Broken)


# -- 2. attention backends --------------------------------------------------------------------------------------------
def _backends(tower: nn.Module) -> set[str]:
    """The attention backend of every module in `tower` that reads one from its config."""
    configs = (getattr(m, "config", None) for m in tower.modules())
    return {c._attn_implementation for c in configs if hasattr(c, "_attn_implementation")}


@classes
@pytest.mark.parametrize("text, vision", [("eager", "sdpa"), ("sdpa", "eager")])
def test_per_tower_attention_backends_are_honoured(model_class, text, vision, tmp_path):
    model = tiny(model_class)
    assert _backends(model.core.text_tower) == _backends(model.core.vision_tower) == {"sdpa"}  # built: the default
    inputs = inputs_for(model, labels=False)
    with torch.no_grad():
        expected = main_output(model(**inputs))
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path, attn_implementation={"text_config": text, "vision_config": vision})
    assert _backends(loaded.core.text_tower) == {text}
    assert _backends(loaded.core.vision_tower) == {vision}
    assert loaded.config.text_config._attn_implementation == text
    with torch.no_grad():
        torch.testing.assert_close(main_output(loaded.eval()(**inputs)), expected, atol=1e-5, rtol=1e-5)
    default = model_class.from_pretrained(tmp_path)
    assert _backends(default.core.text_tower) == _backends(default.core.vision_tower) == {"sdpa"}
    every = model_class.from_pretrained(tmp_path, attn_implementation="eager")
    assert _backends(every.core.text_tower) == _backends(every.core.vision_tower) == {"eager"}


# -- 3. input embeddings ----------------------------------------------------------------------------------------------
@classes
def test_added_tokens_resize_the_text_tower_and_survive_save_load(model_class, tmp_path):
    model = tiny(model_class)
    tokenizer = AutoTokenizer.from_pretrained(resolve_name("minilm"))  # same vocabulary as the tiny BERT
    assert model.get_input_embeddings() is token_tower(model).get_input_embeddings()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    old_size = model.get_input_embeddings().num_embeddings
    tokenizer.add_tokens(["<shape_a>", "<shape_b>"])
    resized = model.resize_token_embeddings(len(tokenizer))

    assert resized is model.get_input_embeddings() and resized.num_embeddings == old_size + 2
    assert token_config(model).vocab_size == old_size + 2
    # the token embeddings and, where a decoder has them, its output embeddings (tied or resized with them)
    vocabulary = {id(m.weight) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    resized_keys = {k for k, v in model.state_dict(keep_vars=True).items() if id(v) in vocabulary}
    key = next(k for k, v in model.state_dict(keep_vars=True).items() if v is resized.weight)
    after = model.state_dict()
    assert torch.equal(after[key][:old_size], before[key]) and torch.isfinite(after[key]).all()
    assert [k for k in before if k not in resized_keys and not torch.equal(after[k], before[k])] == []  # nothing else
    assert len({p.data_ptr() for p in model.parameters()}) == len(list(model.parameters()))  # nothing tied

    inputs = inputs_for(model, labels=False)
    text = tokenizer(
        ["is it a <shape_a> ?"] * inputs["input_ids"].shape[0], return_tensors="pt", return_token_type_ids=False
    )
    assert (text["input_ids"] >= old_size).any()
    inputs.update(text)
    with torch.no_grad():
        out = main_output(model(**inputs))
        other = main_output(
            model(**{**inputs, "input_ids": inputs["input_ids"].where(inputs["input_ids"] < old_size, old_size + 1)})
        )
    assert torch.isfinite(out).all() and not torch.allclose(out, other)  # the new rows are read

    model.save_pretrained(tmp_path)
    loaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    assert loaded.get_input_embeddings().num_embeddings == old_size + 2
    with torch.no_grad():
        assert torch.equal(main_output(loaded.eval()(**inputs)), out)


@classes
def test_new_token_rows_get_the_text_towers_own_init(model_class):
    """`mean_resizing=False` initialises new rows as the tower would (BERT: std 0.02), not with mmft's fan-in init."""
    model = tiny(model_class)
    old_size = model.get_input_embeddings().num_embeddings
    rows = model.resize_token_embeddings(old_size + 64, mean_resizing=False).weight[old_size:]
    expected = token_config(model).initializer_range
    assert 0.7 * expected < rows.std().item() < 1.3 * expected


# -- 4. outputs -------------------------------------------------------------------------------------------------------
def _extras(output) -> set[str]:
    return set(output.keys()) - {"loss", "logits", "text_states", "image_states", "pooled"}


@classes
def test_return_dict_false_returns_the_same_values_as_a_tuple(model_class):
    model = tiny(model_class)
    inputs = inputs_for(model)
    with torch.no_grad():
        as_dict = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
        model.config.return_dict = False
        from_config = model(**inputs)
        forced = model(**inputs, return_dict=True)
    assert isinstance(as_dict, ModelOutput) and isinstance(forced, ModelOutput)
    for output in (as_tuple, from_config):
        assert type(output) is tuple and len(output) == len(as_dict.to_tuple())
        assert all(torch.equal(a, b) for a, b in zip(output, as_dict.to_tuple()))
    assert _extras(as_dict) == set()  # the Trainer gathers every tensor of an output: extras only on request


@classes
def test_hidden_states_are_the_bridge_input_and_each_bridge_layer(model_class):
    model = tiny(model_class)
    inputs = inputs_for(model, labels=False)
    core = model.core
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        fused = core(inputs["pixel_values"], *text_inputs(model, inputs))
        text_input = core.text_states(*text_inputs(model, inputs))
        image_input, _ = core.image_states(inputs["pixel_values"])
    text, image = out.hidden_states
    layers = model.config.num_bridge_layers
    assert len(text) == len(image) == layers + 1
    torch.testing.assert_close(text[0], text_input)
    torch.testing.assert_close(image[0], image_input)
    torch.testing.assert_close(core.bridge.text_norm(text[-1]), fused.text_states)
    torch.testing.assert_close(core.bridge.image_norm(image[-1]), fused.image_states)
    # hidden_states[1] is layer 1's output: the same model cut to one layer ends there
    core.bridge.text_blocks, core.bridge.image_blocks = core.bridge.text_blocks[:1], core.bridge.image_blocks[:1]
    with torch.no_grad():
        cut = core(inputs["pixel_values"], *text_inputs(model, inputs))
    torch.testing.assert_close(core.bridge.text_norm(text[1]), cut.text_states)
    torch.testing.assert_close(core.bridge.image_norm(image[1]), cut.image_states)


@classes
def test_attentions_are_each_bridge_layers_self_and_cross_attention(model_class):
    model = tiny(model_class)
    inputs = inputs_for(model, labels=False)
    with torch.no_grad():
        plain = main_output(model(**inputs))
        out = model(**inputs, output_attentions=True)
    text_ids, text_mask = text_inputs(model, inputs)
    batch, length = text_ids.shape
    image_tokens = model.core.image_states(inputs["pixel_values"])[0].shape[1]
    heads, layers = model.config.num_attention_heads, model.config.num_bridge_layers
    text_self, image_self = out.attentions
    shapes = {
        "text self": (text_self, (batch, heads, length, length)),
        "image self": (image_self, (batch, heads, image_tokens, image_tokens)),
        "text->image": (out.cross_attentions, (batch, heads, length, image_tokens)),
        "image->text": (out.image_cross_attentions, (batch, heads, image_tokens, length)),
    }
    for name, (weights, shape) in shapes.items():
        assert len(weights) == layers, name
        for layer in weights:
            assert layer.shape == shape, name
            torch.testing.assert_close(layer.sum(-1), torch.ones(shape[:-1]))  # rows are distributions
    padded = (text_mask == 0)[:, None, None, :]  # (B, 1, 1, Nt): no query may attend to padding
    for layer in (*text_self, *out.image_cross_attentions):
        assert padded.any() and layer.masked_select(padded.expand_as(layer)).abs().max() == 0
    torch.testing.assert_close(main_output(out), plain, atol=1e-5, rtol=1e-5)  # explicit softmax == SDPA


@classes
def test_output_flags_default_to_the_config_fields(model_class, tmp_path):
    model = tiny(model_class)
    inputs = inputs_for(model, labels=False)
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path, output_attentions=True, output_hidden_states=True).eval()
    with torch.no_grad():
        out = loaded(**inputs)
        off = loaded(**inputs, output_attentions=False, output_hidden_states=False)
    assert out.attentions is not None and out.cross_attentions is not None and out.hidden_states is not None
    assert _extras(off) == set()
    model.set_attn_implementation("eager")  # transformers allows config.output_attentions only with eager attention
    model.config.output_attentions = True
    with torch.no_grad():
        assert len(model(**inputs).cross_attentions) == model.config.num_bridge_layers


@pytest.mark.parametrize("bridge", sorted(BRIDGES))
def test_every_bridge_reports_what_it_has(bridge):
    """Pooled fusions have no attention and no layers: hidden states are just their inputs."""
    model = tiny(MMFTModel, bridge=bridge)
    inputs = inputs_for(model)
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
    layers = model.config.num_bridge_layers
    text_layers, image_layers = {"co_attention": (layers, layers), "cross_attention": (layers, 0)}.get(bridge, (0, 0))
    assert [len(states) for states in out.hidden_states] == [text_layers + 1, image_layers + 1]
    if BRIDGES[bridge].uses_attention:
        assert [len(weights) for weights in out.attentions] == [text_layers, image_layers]
        assert len(out.cross_attentions) == layers
    else:
        assert out.attentions is None and out.cross_attentions is None


# -- 5. export --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vision", ["timm_cnn", "hf_vit"])
def test_towers_alone_export_and_match_eager(vision):
    model = tiny(MMFTModel, vision=vision)
    inputs = inputs_for(model, labels=False)
    cases = [
        (model.core.vision_tower, (inputs["pixel_values"],)),
        (model.core.text_tower, (inputs["input_ids"], inputs["attention_mask"])),
    ]
    for tower, args in cases:
        with torch.no_grad():
            eager = tower(*args)
            exported = torch.export.export(tower, args).module()(*args)
        assert isinstance(eager, ModelOutput) and type(exported) is type(eager)
        assert torch.equal(exported.tokens, eager.tokens) and exported.grid == eager.grid


@classes
def test_whole_model_exports_and_matches_eager(model_class):
    model = tiny(model_class, vision="timm_cnn")
    inputs = inputs_for(model, labels=False)
    with torch.no_grad():
        eager = model(**inputs)
        exported = torch.export.export(model, args=(), kwargs=inputs).module()(**inputs)
    torch.testing.assert_close(main_output(exported), main_output(eager), atol=1e-6, rtol=1e-6)


def test_negative_control_tower_export_needs_a_registered_output_type():
    """A plain dataclass output (what `TowerOutput` was) is what torch.export refuses."""
    from dataclasses import dataclass

    @dataclass
    class PlainOutput:
        tokens: torch.Tensor

    class PlainTower(nn.Module):
        def forward(self, x: torch.Tensor) -> PlainOutput:
            return PlainOutput(x * 2)

    with pytest.raises(Exception, match="not a known type|pytree|PlainOutput"):
        torch.export.export(PlainTower(), (torch.ones(2),))
