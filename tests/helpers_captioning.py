"""Tiny captioning pieces for the tests: a random Llama decoder saved with a BERT tokenizer (a user's own decoder
folder), a tiny captioning model on it, its processor, and a few scenes images with their captions."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from conftest import IMAGE_SIZE, tiny_text_config, tiny_vision_config
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from mmft.data.scenes import scene
from mmft.processing_mmft import MMFTProcessor
from mmft.tasks.captioning.modeling import MMFTForConditionalGeneration
from mmft.tasks.captioning.processing import MMFTCaptionProcessor
from mmft.tasks.generative_vqa.modeling import MMFTForGenerativeVQA
from mmft.tasks.generative_vqa.processing import MMFTPromptProcessor
from mmft.towers import resolve_name


def tiny_decoder_config(tie: bool = True, vocab_size: int = 30522) -> LlamaConfig:
    """A 2-layer Llama over BERT's vocabulary (MiniLM's tokenizer: [CLS] starts, [SEP] ends, [PAD] pads)."""
    return LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        bos_token_id=101,
        eos_token_id=102,
        pad_token_id=0,
        tie_word_embeddings=tie,
    )


def save_tiny_decoder(path: Path, tie: bool = True) -> Path:
    """A user's own decoder folder: a random Llama and a BERT tokenizer, saved with `save_pretrained`."""
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_decoder_config(tie)).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_name("minilm")).save_pretrained(path)
    return path


def tiny_caption_model(
    decoder=None, seed: int = 0, num_query_tokens: int = 4, vision: str = "timm_vit", **overrides
) -> MMFTForConditionalGeneration:
    torch.manual_seed(seed)
    options = dict(
        num_bridge_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        hidden_dropout=0.0,
        num_query_tokens=num_query_tokens,
        caption_token_ids={"bos": 101, "eos": 102, "pad": 0},
    )
    options.update(overrides)
    return MMFTForConditionalGeneration.from_vision_text_pretrained(
        tiny_vision_config(vision), tiny_text_config(), decoder=decoder or tiny_decoder_config(), **options
    )


def tiny_caption_processor(decoder_dir: Path | None = None) -> MMFTCaptionProcessor:
    """Image processor for the tiny towers, MiniLM's tokenizer for the prompt and for captions (BERT vocabulary)."""
    base = MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=IMAGE_SIZE)
    decoder_tokenizer = AutoTokenizer.from_pretrained(decoder_dir or resolve_name("minilm"))
    return MMFTCaptionProcessor(base.image_processor, decoder_tokenizer, base.tokenizer, max_caption_tokens=16)


def scenes_rows(count: int, split: str = "test") -> tuple[list, list[list[str]]]:
    """(PIL images, caption lists) of the first `count` scenes of a split."""
    rows = [scene(index, split) for index in range(count)]
    images = [Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB") for row in rows]
    return images, [row["captions"] for row in rows]


def tiny_generative_model(seed: int = 0, **overrides) -> MMFTForGenerativeVQA:
    """A tiny generative VQA model: tiny ViT and BERT towers, a 1-layer bridge, the tiny Llama decoder; `overrides`
    are further `MMFTConfig` fields."""
    torch.manual_seed(seed)
    options = dict(num_bridge_layers=1, hidden_size=32, num_attention_heads=2, hidden_dropout=0.0, num_query_tokens=4)
    return MMFTForGenerativeVQA.from_vision_text_pretrained(
        tiny_vision_config("timm_vit"),
        tiny_text_config(),
        decoder=tiny_decoder_config(),
        caption_token_ids={"bos": 101, "eos": 102, "pad": 0},
        **{**options, **overrides},
    )


def tiny_generative_processor(**options) -> MMFTPromptProcessor:
    """A generative VQA processor: MiniLM's tokenizer for the question (text tower) and for the decoder (BERT
    vocabulary: [CLS] starts, [SEP] ends, [PAD] pads)."""
    base = MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", image_size=IMAGE_SIZE)
    decoder = AutoTokenizer.from_pretrained(resolve_name("minilm"))
    return MMFTPromptProcessor(base.image_processor, decoder, base.tokenizer, max_caption_tokens=4, **options)
