"""Activation (gradient) checkpointing covers both towers and the bridge, and leaves every gradient unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_model

from mmft import LoraPlan
from mmft.unwrap import task_model


def _watched_modules(model) -> dict[str, torch.nn.Module]:
    """One module inside each checkpointed unit: a timm ViT block, a BERT layer, a bridge layer."""
    core = task_model(model).core
    return {
        "vision (timm Block)": core.vision_tower.model.timm_model.blocks[0].attn,
        "text (BertLayer)": core.text_tower.model.encoder.layer[0].attention,
        "bridge": core.bridge.text_blocks[-1].self_attention,
    }


def _forward_backward(model, batch) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    calls = {}
    hooks = []
    for name, module in _watched_modules(model).items():
        calls[name] = 0
        hooks.append(module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)))
    torch.manual_seed(1)  # the BERT tower has dropout: same masks on both sides (checkpointing replays its RNG)
    model(**batch).loss.backward()
    for hook in hooks:
        hook.remove()
    return calls, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("bridge", ["co_attention", "cross_attention"])
@pytest.mark.parametrize("plan", [None, LoraPlan(vision="lora", text="lora", r=4, dropout=0.0)], ids=["full", "lora"])
def test_checkpointing_recomputes_towers_and_bridge_with_equal_gradients(bridge, plan, batch):
    model = tiny_model(bridge, num_bridge_layers=2)
    if plan is not None:
        model = plan.apply(model)
    model.train()
    checkpointed = copy.deepcopy(model)
    checkpointed.activation_checkpointing_enable()

    plain_calls, plain_grads = _forward_backward(model, batch)
    checkpointed_calls, checkpointed_grads = _forward_backward(checkpointed, batch)

    # Each watched module runs once without checkpointing and twice with it (forward + recompute in backward).
    assert plain_calls == dict.fromkeys(plain_calls, 1)
    assert checkpointed_calls == dict.fromkeys(plain_calls, 2), checkpointed_calls
    assert plain_grads.keys() == checkpointed_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=0, atol=0, msg=name)


def test_checkpointing_switches_off_again(batch):
    model = tiny_model().train()
    model.activation_checkpointing_enable()
    with torch.no_grad():
        model(**batch)  # no gradients: layers run plainly instead of checkpointing
    model.activation_checkpointing_disable()
    calls, _ = _forward_backward(model, batch)
    assert calls == dict.fromkeys(calls, 1)
