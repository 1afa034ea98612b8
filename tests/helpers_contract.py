"""Every mmft model class, a tiny instance of each, and the inputs each one's forward takes (for the contract tests).

`MODEL_CLASSES` is `MMFTModel` plus the model class of every task in `mmft.TASKS`, so a new task's head is covered by
`tests/test_model_contract.py` as soon as it is registered, with no edit here: its tiny batch is built from what its
`forward` declares (`INPUT_BUILDERS`, keyed by the inputs beyond image, text and labels: `image_ids` for pairs of a
gallery, `text_input_ids` for a decoder's prompt), and its tiny model from what `from_vision_text_pretrained` takes
(`MODEL_BUILDERS`: a `decoder`). A forward with inputs no builder knows fails with a message saying so.
"""

from __future__ import annotations

import contextlib
import inspect
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from conftest import IMAGE_SIZE, tiny_text_config, tiny_vision_config
from torch import nn

import mmft
from mmft import MMFTModel

MODEL_CLASSES: list[type] = list(dict.fromkeys([MMFTModel, *(mmft.TASKS.model_class(name) for name in mmft.TASKS)]))
LABELS = ["yes", "no", "red", "circle"]
TINY_OPTIONS = dict(num_bridge_layers=2, hidden_size=32, num_attention_heads=2, hidden_dropout=0.0)
DECODER_QUERY_TOKENS = 3
BATCH = 3
TEXT_LENGTH = 7


def class_id(model_class: type) -> str:
    return model_class.__name__


def _default_model(model_class: type, vision: str, bridge: str, **overrides: Any) -> nn.Module:
    options = {**TINY_OPTIONS, **overrides}
    labels = LABELS if model_class.has_labels else None
    return model_class.from_vision_text_pretrained(
        vision=tiny_vision_config(vision), text=tiny_text_config(), bridge=bridge, labels=labels, **options
    )


def image_text_inputs(model: nn.Module, labels: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """(B, 3, H, W) pixels, (B, T) token ids with padding in the last row, and label ids for a labelled head."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.text_config.vocab_size
    input_ids = torch.randint(1000, vocab, (BATCH, TEXT_LENGTH), generator=generator)
    input_ids[:, 0] = 101  # [CLS]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, -3:] = 0  # a padded row, so masks matter
    inputs = {
        "pixel_values": torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
    }
    if labels and type(model).has_labels:
        inputs["labels"] = torch.randint(0, model.config.num_labels, (BATCH,), generator=generator)
    return inputs


def retrieval_inputs(model: nn.Module, labels: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """Aligned (image, caption) pairs; rows 0 and 1 show one image (`image_ids`). `labels=False`: no loss (its
    hard-negative draw is seeded in Python from the image ids, which `torch.export` cannot trace)."""
    inputs = image_text_inputs(model, labels=False, seed=seed)
    inputs["image_ids"] = torch.tensor([0, 0, *range(1, BATCH - 1)])
    return {**inputs, "return_loss": labels}


def caption_inputs(model: nn.Module, labels: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A captioning model's inputs: the image and the prompt the text tower reads (`text_input_ids`, with a padded
    row) plus the caption so far in the decoder's vocabulary (`input_ids`, starting with its start token). One
    forward without the KV cache (a `DynamicCache` output is no pytree for torch.export); the generation tests in
    tests/test_captioning.py check the cache."""
    image_text = image_text_inputs(model, labels=False, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    captions = torch.randint(1000, model.config.decoder_config.vocab_size, (BATCH, 5), generator=generator)
    captions[:, 0] = model.config.decoder_config.bos_token_id  # start id; a copied folder may lack generation_config
    inputs = {
        "pixel_values": image_text["pixel_values"],
        "text_input_ids": image_text["input_ids"],
        "text_attention_mask": image_text["attention_mask"],
        "input_ids": captions,
        "use_cache": False,
    }
    if labels:
        inputs["labels"] = captions.clone()
    return inputs


def tiny_decoder_config():
    """A 1-layer random Llama's config with BERT's vocabulary (MiniLM's tokenizer) and its ids."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=tiny_text_config().vocab_size,
        bos_token_id=101,
        eos_token_id=102,
        pad_token_id=0,
    )


def _caption_model(model_class: type, vision: str, bridge: str, **overrides: Any) -> nn.Module:
    """A captioning model over a tiny random decoder (`tiny_decoder_config`)."""
    options = {**TINY_OPTIONS, "num_query_tokens": DECODER_QUERY_TOKENS, **overrides}
    return model_class.from_vision_text_pretrained(
        vision=tiny_vision_config(vision),
        text=tiny_text_config(),
        bridge=bridge,
        decoder=tiny_decoder_config(),
        **options,
    )


# the forward's inputs beyond (pixel_values, input_ids, attention_mask, labels) -> (model, labels?) -> forward kwargs
INPUT_BUILDERS: dict[frozenset[str], Callable[..., dict[str, torch.Tensor]]] = {
    frozenset(): image_text_inputs,
    frozenset({"image_ids", "return_loss"}): retrieval_inputs,
    frozenset({"text_input_ids", "text_attention_mask"}): caption_inputs,
}
# an argument of `from_vision_text_pretrained` -> (model class, vision kind, bridge, **overrides) -> model; without
# one of them, the default builder (image-text heads)
MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {"decoder": _caption_model}
# the same, as a multi-task model's task overrides (`MMFTForMultiTask.from_vision_text_pretrained(tasks=...)`)
TASK_OVERRIDES: dict[str, Callable[[], dict[str, Any]]] = {
    "decoder": lambda: {"decoder_config": tiny_decoder_config(), "num_query_tokens": DECODER_QUERY_TOKENS}
}
TEXT_KEYS_OF_PROMPTED = ("text_input_ids", "text_attention_mask")  # a decoder's prompt, as the text tower reads it
_COMMON = {"pixel_values", "input_ids", "attention_mask", "labels"}


def forward_extras(model_class: type) -> frozenset[str]:
    """The inputs `model_class.forward` names beyond image, text and labels: those a builder makes, and any other
    it requires (no default), which no builder makes."""
    parameters = inspect.signature(model_class.forward).parameters
    known = {name for names in INPUT_BUILDERS for name in names}
    required = {
        name
        for name, parameter in list(parameters.items())[1:]
        if parameter.default is inspect.Parameter.empty
        and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    }
    return frozenset(name for name in parameters if (name in known or name in required) and name not in _COMMON)


def prompted(model_class: type) -> bool:
    """Whether the text tower reads `text_input_ids` (a captioning model: `input_ids` are the decoder's)."""
    return "text_input_ids" in forward_extras(model_class)


def text_inputs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The text tower's (ids, mask) among a model's forward inputs."""
    ids, mask = TEXT_KEYS_OF_PROMPTED if prompted(type(model)) else ("input_ids", "attention_mask")
    return inputs[ids], inputs[mask]


def token_tower(model: nn.Module) -> nn.Module:
    """The tower whose token embeddings `get_input_embeddings` returns and `resize_token_embeddings` resizes: a
    captioning model's decoder (it writes the tokens a user adds), every other model's text tower."""
    return model.decoder.model if prompted(type(model)) else model.core.text_tower.model


def token_config(model: nn.Module):
    """The config (inside `model.config`) of `token_tower(model)`."""
    return model.config.decoder_config if prompted(type(model)) else model.config.text_config


def tiny(model_class: type, vision: str = "hf_vit", bridge: str = "co_attention", seed: int = 0, **overrides: Any):
    """A tiny random model of `model_class` (2 bridge layers, width 32), in eval mode."""
    torch.manual_seed(seed)
    # A subclass (a test's deliberately broken head) is built like its parent: the default builder would load the
    # real pretrained decoder of a captioning model.
    arguments = inspect.signature(model_class.from_vision_text_pretrained).parameters
    build = next((MODEL_BUILDERS[name] for name in arguments if name in MODEL_BUILDERS), _default_model)
    return build(model_class, vision, bridge, **overrides).eval()


def inputs_for(model: nn.Module, labels: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """The forward kwargs of `model`, from its class's input builder."""
    extras = forward_extras(type(model))
    builder = INPUT_BUILDERS.get(extras)
    if builder is None:
        pytest.fail(
            f"{type(model).__name__}'s forward takes {sorted(extras)}, which no input builder makes: add one to "
            "INPUT_BUILDERS in tests/helpers_contract.py, so the model contract tests can run it"
        )
    return builder(model, labels=labels, seed=seed)


def main_output(output: Any) -> torch.Tensor:
    """The tensor a model's output leads with: logits for heads, the fused text states for `MMFTModel`."""
    if isinstance(output, tuple):
        return output[0] if output[0].dim() > 0 else output[1]  # a loss comes first when labels were given
    return output.logits if "logits" in output else output.text_states


def tower_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Qualified-name prefixes of the towers inside `model` ("mmft.vision_tower.", ...)."""
    towers = {id(tower) for tower in model.towers().values()}
    return tuple(f"{name}." for name, module in model.named_modules() if id(module) in towers)


def mmft_owned_keys(model: nn.Module) -> list[str]:
    """State-dict keys of everything mmft builds itself: projections, modality embeddings, bridge, heads."""
    prefixes = tower_prefixes(model)
    return [key for key in model.state_dict() if not key.startswith(prefixes)]


@contextlib.contextmanager
def uninitialised_memory_is_nan() -> Iterator[None]:
    """Inside, every `torch.empty`-like allocation is filled with NaN, so a parameter nothing initialises shows up as
    NaN every time (outside, it holds whatever the allocator returns: often zeros, sometimes 1e38)."""
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


# -- the same models as a multi-task checkpoint gives them back (tests/test_multitask_contract.py) ---------------------
JOINT_TASKS = ("vqa", "classification", "retrieval")  # the heads beside the checked one in the joint model


def task_of(model_class: type) -> str | None:
    """The registered task whose head `model_class` is; None for `MMFTModel` (no task's)."""
    return next((name for name in mmft.TASKS if mmft.TASKS.model_class(name) is model_class), None)


def task_overrides(model_class: type) -> dict[str, Any]:
    """What `tiny` gives `model_class`'s head beyond the shared options, as its task's entry in a multi-task model:
    the label vocabulary, or (`TASK_OVERRIDES`) a decoder."""
    arguments = inspect.signature(model_class.from_vision_text_pretrained).parameters
    build = next((TASK_OVERRIDES[name] for name in arguments if name in TASK_OVERRIDES), None)
    if build is not None:
        return build()
    return {"labels": LABELS} if model_class.has_labels else {}


def tiny_for_task(model_class: type, vision: str = "hf_vit", bridge: str = "co_attention", seed: int = 0, **overrides):
    """`tiny`, by way of a multi-task checkpoint: a tiny `MMFTForMultiTask` holding `model_class`'s task beside
    `JOINT_TASKS`, saved and reloaded with `AutoModelForMultiTask`, then `for_task(task).save_pretrained` loaded with
    the task's Auto class; in eval mode. Skips `MMFTModel` (a multi-task checkpoint gives task models)."""
    from mmft import AutoModelForMultiTask, MMFTForMultiTask
    from mmft.tasks import get_task

    task = task_of(model_class)
    if task is None:
        pytest.skip(f"{model_class.__name__} is no task's head: a multi-task checkpoint gives task models")
    tasks = {name: task_overrides(mmft.TASKS.model_class(name)) for name in dict.fromkeys((*JOINT_TASKS, task))}
    torch.manual_seed(seed)
    joint = MMFTForMultiTask.from_vision_text_pretrained(
        tiny_vision_config(vision), tiny_text_config(), tasks=tasks, bridge=bridge, **{**TINY_OPTIONS, **overrides}
    )
    with tempfile.TemporaryDirectory() as folder:
        joint.save_pretrained(f"{folder}/joint")
        reloaded = AutoModelForMultiTask.from_pretrained(f"{folder}/joint")
        reloaded.for_task(task).save_pretrained(f"{folder}/{task}")
        model, info = get_task(task).auto_class.from_pretrained(f"{folder}/{task}", output_loading_info=True)
    assert type(model) is model_class and not any(info.values()), (type(model), info)
    # The joint checkpoint's own weights: its shared core (`mmft.*`) and the task's head (`heads.<task>.*`).
    prefix = model.base_model_prefix
    joint_state = reloaded.state_dict()
    for key, value in model.state_dict().items():
        joint_key = key if key.startswith(f"{prefix}.") else f"heads.{task}.{key}"
        assert torch.equal(value, joint_state[joint_key]), key
    return model.eval()
