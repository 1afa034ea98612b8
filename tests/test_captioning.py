"""The captioning model on tiny random towers and a tiny random Llama decoder: loss on caption tokens only,
generate() in every mode with and without the KV cache, save/load, the decoder's LoRA plan, config validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import train_steps
from helpers_captioning import (
    save_tiny_decoder,
    scenes_rows,
    tiny_caption_model,
    tiny_caption_processor,
    tiny_decoder_config,
)
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, BertConfig, ViTConfig

import mmft
from mmft import LoraPlan, MMFTConfig, MMFTForConditionalGeneration
from mmft.metrics.caption_tokenize import tokenize_caption

CAPTIONS = [
    "a red circle at the top",
    "two shapes: a blue square and a green star",
    "a tiny pink cross",
    "the black diamond is left of the orange triangle",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: a second thread costs more in synchronisation than it saves (several times, on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def processor():
    return tiny_caption_processor()


@pytest.fixture(scope="module")
def batch(processor):
    images, _ = scenes_rows(4)
    return dict(processor(images=images, text=CAPTIONS))


@pytest.fixture(scope="module")
def model():
    """A random tiny model whose greedy captions depend on the image: at the usual init (std 0.02) a random decoder
    repeats one token whatever it reads, so its weights are drawn at std 1."""
    config = tiny_decoder_config()
    config.initializer_range = 1.0
    return tiny_caption_model(decoder=config, seed=1).eval()


def _generate(model, batch, **kwargs) -> torch.Tensor:
    inputs = {k: batch[k] for k in ("pixel_values", "text_input_ids", "text_attention_mask")}
    start = torch.full((len(batch["pixel_values"]), 1), 101)
    return model.generate(**inputs, input_ids=start, attention_mask=torch.ones_like(start), max_new_tokens=8, **kwargs)


def test_loss_is_mean_cross_entropy_over_caption_tokens_only(batch):
    model = tiny_caption_model().eval()
    out = model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape  # caption positions only: no logits for the prefix
    labels = batch["labels"]
    keep = labels[:, 1:] != -100  # caption tokens and the end token; never padding, never the start token
    expected = F.cross_entropy(out.logits[:, :-1][keep], labels[:, 1:][keep])
    torch.testing.assert_close(out.loss, expected)
    assert (batch["attention_mask"] == 0).any(), "the batch must have padding for this test to mean anything"
    # negative control: if padding were labelled, the loss would change
    unmasked = model(**{**batch, "labels": batch["input_ids"]}).loss
    assert abs(unmasked.item() - out.loss.item()) > 1e-3


def test_the_image_conditions_the_caption_through_the_prefix(batch):
    model = tiny_caption_model().eval()
    with torch.no_grad():
        logits = model(**batch).logits
        same = model(**batch).logits
        flipped = model(**{**batch, "pixel_values": batch["pixel_values"].flip(0)}).logits
    assert torch.equal(logits, same)
    assert (logits - flipped).abs().amax(dim=(1, 2)).min() > 1e-6  # another image, other next-token scores
    with pytest.raises(ValueError, match="pixel_values"):
        model(input_ids=batch["input_ids"])


def test_learns_four_captions(batch):
    model = tiny_caption_model(seed=1)
    model.core.text_tower.requires_grad_(False)
    losses = train_steps(model, batch, steps=25)
    assert losses[-1] < 0.3 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_greedy_with_cache_equals_without(model, batch):
    cached, uncached = _generate(model, batch), _generate(model, batch, use_cache=False)
    assert torch.equal(cached, uncached)
    # negative control: the output is not one constant sequence, and moving the images moves the captions
    assert len({tuple(row) for row in cached.tolist()}) == 4
    flipped = _generate(model, {**batch, "pixel_values": batch["pixel_values"].flip(0)})
    assert torch.equal(flipped, cached.flip(0))


def test_beam_search_and_sampling(model, batch):
    beams = _generate(model, batch, num_beams=3)
    assert torch.equal(beams, _generate(model, batch, num_beams=3, use_cache=False))
    torch.manual_seed(0)
    sampled = _generate(model, batch, do_sample=True, top_p=0.9, temperature=2.0)
    torch.manual_seed(0)
    assert torch.equal(sampled, _generate(model, batch, do_sample=True, top_p=0.9, temperature=2.0, use_cache=False))
    assert not torch.equal(sampled, _generate(model, batch))  # at temperature 2 sampling leaves the greedy path


def test_all_image_states_as_prefix_without_queries(batch):
    model = tiny_caption_model(num_query_tokens=0).eval()
    assert model.caption_prefix.queries is None
    prefix, _ = model.image_prefix(batch["pixel_values"], batch["text_input_ids"], batch["text_attention_mask"])
    assert prefix.shape[1] == model.core.image_states(batch["pixel_values"])[0].shape[1]  # one per image state
    assert torch.equal(_generate(model, batch), _generate(model, batch, use_cache=False))


def test_save_load_keeps_greedy_output_and_tied_embeddings(model, batch, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(loaded) is MMFTForConditionalGeneration
    decoder = loaded.decoder.model
    assert decoder.lm_head.weight.data_ptr() == decoder.model.embed_tokens.weight.data_ptr()  # re-tied on load
    assert torch.equal(_generate(loaded, batch), _generate(model, batch))
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
    # negative control: the same architecture with other weights writes other captions
    assert not torch.equal(_generate(tiny_caption_model(seed=5).eval(), batch), _generate(model, batch))


def test_untied_decoder_stays_untied(tmp_path, batch):
    model = tiny_caption_model(decoder=tiny_decoder_config(tie=False)).eval()
    model.save_pretrained(tmp_path)
    decoder = AutoModelForImageTextToText.from_pretrained(tmp_path).decoder.model
    assert decoder.lm_head.weight.data_ptr() != decoder.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(decoder.lm_head.weight, model.decoder.model.lm_head.weight, rtol=0, atol=0)


def test_user_decoder_folder_and_processor_round_trip(tmp_path, batch):
    folder = save_tiny_decoder(tmp_path / "decoder")
    model = tiny_caption_model(decoder=str(folder))
    assert model.config.decoder_pretrained_from == str(folder)
    pretrained = AutoModelForCausalLM.from_pretrained(folder)
    torch.testing.assert_close(model.decoder.model.lm_head.weight, pretrained.lm_head.weight, rtol=0, atol=0)
    processor = tiny_caption_processor(folder)
    processor.prompt = "what is in the picture"
    processor.save_pretrained(tmp_path / "saved")
    loaded = AutoProcessor.from_pretrained(tmp_path / "saved")
    assert type(loaded).__name__ == "MMFTCaptionProcessor" and loaded.prompt == "what is in the picture"
    assert (tmp_path / "saved" / "text_tokenizer").is_dir()
    features = loaded(text=CAPTIONS)
    assert features["input_ids"][0, 0] == 101
    assert (features["labels"] == -100).sum() == (features["attention_mask"] == 0).sum() > 0
    # BERT's tokenizer writes "shapes : a"; compared as the caption metrics tokenize (punctuation dropped)
    assert [tokenize_caption(c) for c in loaded.decode_captions(features["input_ids"])] == [
        tokenize_caption(c) for c in CAPTIONS
    ]


def test_lora_decoder_plan_trains_only_adapters_and_always_trained_parts(batch):
    model = tiny_caption_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    planned = LoraPlan(vision="frozen", text="frozen", decoder="lora", r=4).apply(model)
    trainable = {name for name, p in planned.named_parameters() if p.requires_grad}
    in_decoder = {name for name in trainable if ".decoder." in name}
    assert in_decoder and all("lora_" in name for name in in_decoder)
    assert not any("embed_tokens" in name or "lm_head" in name for name in trainable)
    assert any("caption_prefix" in name for name in trainable) and any("bridge" in name for name in trainable)
    train_steps(planned, batch, steps=3)
    base = planned.get_base_model().state_dict()
    for key in ("decoder.model.model.layers.0.self_attn.q_proj.base_layer.weight", "decoder.model.lm_head.weight"):
        original = key.replace(".base_layer", "")
        assert torch.equal(base[key], initial[original]), key  # frozen under LoRA
    # negative control: the full plan trains the decoder's embeddings and output layer
    full = LoraPlan(vision="frozen", text="frozen", decoder="full").apply(tiny_caption_model())
    decoder = full.decoder.model
    assert decoder.lm_head.weight.requires_grad and decoder.model.embed_tokens.weight.requires_grad
    counts = LoraPlan.trainable_parameters(full)
    assert counts["decoder"] == sum(p.numel() for p in full.decoder.parameters()) and counts["vision"] == 0


def test_models_without_a_decoder_have_no_decoder_slot():
    from conftest import tiny_model

    assert "decoder" not in tiny_model().towers()
    counts = LoraPlan.trainable_parameters(LoraPlan(vision="full", text="frozen").apply(tiny_model()))
    assert set(counts) == {"vision", "text", "bridge+head"}


def test_invalid_captioning_configs_fail_at_construction(tmp_path):
    with pytest.raises(ValueError, match="no causal language model"):
        MMFTConfig(vision_config=ViTConfig(), text_config=BertConfig(), decoder_config=ViTConfig())
    with pytest.raises(ValueError, match="num_query_tokens"):
        MMFTConfig(num_query_tokens=-1)
    with pytest.raises(ValueError, match="decoder_config"):
        MMFTForConditionalGeneration(MMFTConfig(vision_config=ViTConfig(), text_config=BertConfig()))
    with pytest.raises(ValueError, match="decoder"):
        tiny_caption_model(decoder=str(tmp_path / "no_such_decoder"))
    with pytest.raises(ValueError, match="decoder_model_args"):
        from mmft.towers import decoder_config_from_name

        decoder_config_from_name(str(save_tiny_decoder(tmp_path)), {"no_such_field": 1})


def test_generation_reads_the_decoder_config():
    config = tiny_caption_model().config
    assert config.get_text_config(decoder=True).model_type == "llama"
    assert config.get_text_config().vocab_size == 30522  # beam search indexes by the decoder's vocabulary
    assert config.get_text_config(encoder=True) is not config.decoder_config
    assert mmft.TASKS["captioning"].model_class is MMFTForConditionalGeneration


def test_flops_estimate_matches_torch_flop_counter(batch):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from mmft.flops import forward_flops, training_flops

    model = tiny_caption_model().eval()
    pixels = batch["pixel_values"]
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(**{k: v for k, v in batch.items() if k != "labels"})
    counted = counter.get_total_flops() / len(pixels)
    fused = model.core(pixels, batch["text_input_ids"], batch["text_attention_mask"])
    shapes = (fused.image_states.shape[1], fused.text_states.shape[1], tuple(pixels.shape[1:]))
    estimate = forward_flops(model, *shapes, caption_tokens=batch["input_ids"].shape[1])
    assert estimate.decoder > 0 and estimate.total == pytest.approx(counted, rel=0.06)
    frozen = LoraPlan(vision="full", text="frozen", decoder="frozen").apply(model)
    assert training_flops(frozen, estimate) == pytest.approx(
        3 * (estimate.vision + estimate.bridge) + estimate.text + 2 * estimate.decoder
    )  # backward through the decoder
    full = LoraPlan(vision="full", text="frozen", decoder="full").apply(tiny_caption_model())
    assert training_flops(full, estimate) == pytest.approx(
        3 * (estimate.vision + estimate.bridge) + estimate.text + 3 * estimate.decoder
    )


def test_caption_flops_come_from_the_batch_shapes_with_no_forward_run_first(batch):
    """Negative control for the removed side channel (a training forward used to record its caption length on the
    model): a fresh model, never run, gives the decoder's FLOPs of a batch from its shapes alone, the same as a model
    that has just run another batch, and they grow with the caption length."""
    from mmft.flops import forward_flops

    pixels, length = batch["pixel_values"], batch["input_ids"].shape[1]
    fresh = tiny_caption_model()
    trained = tiny_caption_model()
    trained.load_state_dict(fresh.state_dict())
    short = {k: v[:, :3] if k in ("input_ids", "attention_mask", "labels") else v for k, v in batch.items()}
    trained.train()(**short)  # a training forward of a shorter caption batch
    assert not hasattr(fresh, "caption_tokens") and not hasattr(trained, "caption_tokens")
    fused = fresh.core(pixels, batch["text_input_ids"], batch["text_attention_mask"])
    shapes = (fused.image_states.shape[1], fused.text_states.shape[1], tuple(pixels.shape[1:]))
    estimate = forward_flops(fresh, *shapes, caption_tokens=length)
    assert estimate.decoder > 0
    assert forward_flops(trained, *shapes, caption_tokens=length) == estimate  # the last batch run does not matter
    assert forward_flops(fresh, *shapes, caption_tokens=length + 4).decoder > estimate.decoder
    assert forward_flops(fresh, *shapes).decoder < estimate.decoder  # no captions: the prefix positions only


def test_throughput_counts_caption_tokens_and_decoder_flops_from_the_batch(batch, tmp_path):
    """ThroughputCallback reads the caption length off the decoder's output for the batch it trained on (the model
    records nothing), and counts the FLOPs `forward_flops` gives for that batch's shapes."""
    from transformers import Trainer, TrainingArguments

    from mmft.callbacks import ThroughputCallback
    from mmft.flops import forward_flops, training_flops

    model = tiny_caption_model()
    rows = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["input_ids"]))]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=len(rows),
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[ThroughputCallback(peak_flops=1e12)])
    trainer.train()
    logged = [row for row in trainer.state.log_history if "perf/flops_per_step" in row]
    pixels, captions = batch["pixel_values"], batch["input_ids"].shape[1]
    fused = model.core(pixels, batch["text_input_ids"], batch["text_attention_mask"])
    image_tokens, text_tokens = fused.image_states.shape[1], fused.text_states.shape[1]
    forward = forward_flops(model, image_tokens, text_tokens, tuple(pixels.shape[1:]), captions)
    assert logged and forward.decoder > 0
    for row in logged:
        assert row["perf/flops_per_step"] == pytest.approx(len(rows) * training_flops(model, forward))
        tokens = image_tokens + text_tokens + captions
        assert row["perf/tokens_per_second"] == pytest.approx(row["perf/samples_per_second"] * tokens)


def test_a_decoder_folder_with_only_pickled_weights_is_refused(tmp_path):
    """Safetensors only, as for every mmft entry point (the same folder with model.safetensors loads: see
    test_user_decoder_folder_and_processor_round_trip)."""
    from safetensors.torch import load_file

    from mmft.safe_loading import PickledWeightsError

    folder = save_tiny_decoder(tmp_path / "decoder")
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(PickledWeightsError, match="pytorch_model.bin"):
        tiny_caption_model(decoder=str(folder))


def test_decoder_attention_backend_is_applied_and_gives_the_same_loss(batch):
    """`decoder_attn_implementation` reaches the decoder's attention layers (eager is the faster backend for short
    prompts on the CPU), computes what sdpa computes, and an unknown backend is refused at construction."""
    models = {name: tiny_caption_model(seed=3, decoder_attn_implementation=name) for name in ("eager", "sdpa")}
    for name, model in models.items():
        layer = model.decoder.model.model.layers[0].self_attn
        assert layer.config._attn_implementation == name
    losses = [model.eval()(**batch).loss for model in models.values()]
    torch.testing.assert_close(losses[0], losses[1])
    with pytest.raises(ValueError, match="no_such_backend"):
        tiny_caption_model(decoder_attn_implementation="no_such_backend")
