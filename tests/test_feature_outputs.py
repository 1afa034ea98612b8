"""`get_image_features` / `get_text_features` keep transformers 5's feature contract (`mmft/features.py`).

As transformers' common model tests check it (`test_get_*_features_output`, `..._hidden_states`, `..._attentions`):
a `BaseModelOutputWithPooling` with the embedding in `pooler_output`; the tower's `hidden_states` (its layers + the
embeddings) and `attentions` (one per layer) only when asked, by argument or config field; `return_dict=False` gives
`.to_tuple()` (CLIP's order: last_hidden_state, pooler_output, ...). Checked for every model class that has the
methods (`MMFTModel` and the retrieval model) and, where a timm tower has no layers of its own to report, for what
mmft documents instead: timm's intermediate maps and no attentions.
"""

from __future__ import annotations

import pytest
import torch
from helpers_contract import MODEL_CLASSES, class_id, inputs_for, tiny
from transformers.modeling_outputs import BaseModelOutputWithPooling

FEATURE_CLASSES = [cls for cls in MODEL_CLASSES if hasattr(cls, "get_image_features")]
classes = pytest.mark.parametrize("model_class", FEATURE_CLASSES, ids=class_id)


def _old_embeddings(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, text) embeddings as the methods computed them when they returned bare tensors."""
    core, mask = model.core, inputs["attention_mask"]
    image_states = core.image_states(inputs["pixel_values"])[0]  # (B, Nv, D)
    text_states = core.text_states(inputs["input_ids"], mask)  # (B, Nt, D)
    if hasattr(model, "image_embedding"):  # the retrieval model: the shared space of its contrastive head
        return model.image_embedding(image_states), model.text_embedding(text_states, mask)
    weights = mask.unsqueeze(-1).float()
    return image_states.mean(dim=1), (text_states * weights).sum(dim=1) / weights.sum(dim=1)


def _features(model, inputs, **flags) -> tuple[BaseModelOutputWithPooling, BaseModelOutputWithPooling]:
    with torch.no_grad():
        image = model.get_image_features(inputs["pixel_values"], **flags)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"], **flags)
    return image, text


@classes
@pytest.mark.parametrize("vision", ["hf_vit", "timm_cnn"])
def test_features_are_a_base_model_output_around_the_old_embedding(model_class, vision):
    model = tiny(model_class, vision=vision)
    inputs = inputs_for(model, labels=False)
    image, text = _features(model, inputs)
    with torch.no_grad():
        old_image, old_text = _old_embeddings(model, inputs)
        image_tokens = model.core.vision_tower(inputs["pixel_values"]).tokens
        text_tokens = model.core.text_tower(inputs["input_ids"], inputs["attention_mask"]).tokens
    for out, old, tokens in ((image, old_image, image_tokens), (text, old_text, text_tokens)):
        assert type(out) is BaseModelOutputWithPooling
        torch.testing.assert_close(out.pooler_output, old)
        torch.testing.assert_close(out.last_hidden_state, tokens)  # the tower's own states, before any projection
        assert out.hidden_states is None and out.attentions is None  # extras only on request


@classes
def test_hidden_states_are_the_towers_layers_and_embeddings_when_asked(model_class):
    model = tiny(model_class)  # HF ViT + BERT towers
    inputs = inputs_for(model, labels=False)
    plain_image, plain_text = _features(model, inputs)
    image, text = _features(model, inputs, output_hidden_states=True)
    model.config.output_hidden_states = True  # the config field is the default, as in transformers
    from_config = _features(model, inputs)
    off = _features(model, inputs, output_hidden_states=False)
    layers = {"image": model.config.vision_config.num_hidden_layers, "text": model.config.text_config.num_hidden_layers}
    for out, kind in ((image, "image"), (text, "text"), (from_config[0], "image"), (from_config[1], "text")):
        assert isinstance(out.hidden_states, tuple) and len(out.hidden_states) == layers[kind] + 1, kind
        assert out.attentions is None
    assert off[0].hidden_states is None and off[1].hidden_states is None
    torch.testing.assert_close(text.hidden_states[-1], text.last_hidden_state)  # BERT: no final norm
    torch.testing.assert_close(image.pooler_output, plain_image.pooler_output)  # asking changes no embedding
    torch.testing.assert_close(text.pooler_output, plain_text.pooler_output)


@classes
def test_attentions_are_each_tower_layers_with_eager_attention(model_class):
    model = tiny(model_class)
    inputs = inputs_for(model, labels=False)
    model.set_attn_implementation("eager")  # sdpa computes no weights to return
    image, text = _features(model, inputs, output_attentions=True)
    model.config.output_attentions = True
    from_config = _features(model, inputs)
    batch, length = inputs["input_ids"].shape
    patches = image.last_hidden_state.shape[1]
    vision, text_config = model.config.vision_config, model.config.text_config
    expected = {
        "image": (vision, (batch, vision.num_attention_heads, patches, patches)),
        "text": (text_config, (batch, text_config.num_attention_heads, length, length)),
    }
    for out, kind in ((image, "image"), (text, "text"), (from_config[0], "image"), (from_config[1], "text")):
        config, shape = expected[kind]
        assert len(out.attentions) == config.num_hidden_layers, kind
        assert all(weights.shape == shape for weights in out.attentions), kind
        assert out.hidden_states is None


@classes
def test_sdpa_towers_give_the_attentions_their_model_gives(model_class):
    """transformers' own answer for an sdpa tower (today an empty tuple and a warning), not an mmft invention."""
    model = tiny(model_class)
    inputs = inputs_for(model, labels=False)
    image, text = _features(model, inputs, output_attentions=True)
    with torch.no_grad():
        own_image = model.core.vision_tower.model(pixel_values=inputs["pixel_values"], output_attentions=True)
        own_text = model.core.text_tower.model(input_ids=inputs["input_ids"], output_attentions=True)
    assert len(image.attentions) == len(own_image.attentions) and len(text.attentions) == len(own_text.attentions)


@classes
def test_return_dict_false_is_clips_tuple(model_class):
    model = tiny(model_class)
    inputs = inputs_for(model, labels=False)
    image, text = _features(model, inputs, output_hidden_states=True)
    as_tuple = _features(model, inputs, output_hidden_states=True, return_dict=False)
    model.config.return_dict = False
    from_config = _features(model, inputs, output_hidden_states=True)
    forced = _features(model, inputs, return_dict=True)
    for out, tuples in ((image, (as_tuple[0], from_config[0])), (text, (as_tuple[1], from_config[1]))):
        for result in tuples:
            assert type(result) is tuple and len(result) == 3  # None fields (attentions) are left out
            assert result[0] is not None and torch.equal(result[0], out.last_hidden_state)
            assert torch.equal(result[1], out.pooler_output)  # the embedding is [1], as in CLIP
            assert len(result[2]) == len(out.hidden_states)
    assert all(type(out) is BaseModelOutputWithPooling for out in forced)


@classes
@pytest.mark.parametrize("vision", ["timm_vit", "timm_cnn"])
def test_timm_towers_give_timms_intermediate_maps_and_no_attentions(model_class, vision):
    model = tiny(model_class, vision=vision)
    inputs = inputs_for(model, labels=False)
    plain, _ = _features(model, inputs)
    image, _ = _features(model, inputs, output_hidden_states=True, output_attentions=True)
    assert image.attentions is None  # timm exposes no attention weights; asking is not an error
    timm_model = model.core.vision_tower.model.timm_model
    maps = image.hidden_states
    assert isinstance(maps, tuple) and all(state.dim() == 4 for state in maps)  # (B, C, h, w) each
    if vision == "timm_vit":  # forward_intermediates: one map per block
        assert len(maps) == len(timm_model.blocks)
    else:  # a features_only CNN: the stage maps `out_indices` selects, the last one being the tokens
        assert len(maps) == len(model.config.vision_config.model_args["out_indices"])
        torch.testing.assert_close(maps[-1].flatten(2).transpose(1, 2), image.last_hidden_state)
    torch.testing.assert_close(image.last_hidden_state, plain.last_hidden_state)
    torch.testing.assert_close(image.pooler_output, plain.pooler_output)


def test_the_frozen_text_cache_still_gives_hidden_states():
    model = tiny(FEATURE_CLASSES[0])
    inputs = inputs_for(model, labels=False)
    core = model.core
    core.text_tower.requires_grad_(False)
    core.enable_frozen_text_cache()
    _, cached = _features(model, inputs)
    assert core._text_cache  # the plain call went through the cache
    _, text = _features(model, inputs, output_hidden_states=True)
    assert len(text.hidden_states) == model.config.text_config.num_hidden_layers + 1
    torch.testing.assert_close(text.pooler_output, cached.pooler_output)
