"""Fusion modules that join image tokens and text tokens: the cross-modal attention bridge and simpler baselines.

Every bridge takes both token streams already projected to the bridge width and returns a `BridgeOutput`, and knows
its own forward FLOPs (`Bridge.flops`). Adding a fusion means writing one `Bridge` subclass and adding it to `BRIDGES`
(or calling `register_bridge`); a subclass without a closed-form `flops` is counted by torch's FLOP counter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput


@dataclass
class BridgeOutput(ModelOutput):
    """
    text_states (`(B, Nt, D)`), image_states (`(B, Nv, D)`): both streams after the bridge; pooled (`(B, P)`).
    hidden_states (with `output_hidden_states=True`): `(text, image)`, each a tuple of the stream as it entered the
        bridge, then after each bridge layer that updates it (before the bridge's final LayerNorm).
    attentions (with `output_attentions=True`): `(text, image)`, each a tuple of that stream's self-attention
        weights per layer, `(B, H, N, N)`.
    cross_attentions: text->image weights per layer `(B, H, Nt, Nv)`; image_cross_attentions: image->text
        `(B, H, Nv, Nt)` (co-attention only). Bridges without attention return none of these.
    """

    text_states: torch.Tensor | None = None
    image_states: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    hidden_states: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    attentions: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    image_cross_attentions: tuple[torch.Tensor, ...] | None = None


class LayerTrace:
    """What a bridge collects while it runs, when asked: each stream's states and each attention's weights.

    `add` takes one layer's results; a stream or an attention a layer does not have is None and is not recorded.
    """

    def __init__(self, text: torch.Tensor, image: torch.Tensor, attentions: bool, hidden_states: bool) -> None:
        self.attentions, self.hidden_states = attentions, hidden_states
        self.states: tuple[list, list] = ([text], [image])
        self.weights: tuple[list, ...] = ([], [], [], [])  # text self, image self, text->image, image->text

    def add(self, text: torch.Tensor | None, image: torch.Tensor | None, *weights: torch.Tensor | None) -> None:
        states = (text, image) if self.hidden_states else (None, None)  # hold no layer's states unless asked
        for kept, value in zip((*self.states, *self.weights), (*states, *weights)):
            if value is not None:
                kept.append(value)

    def output(self, text_states: torch.Tensor, image_states: torch.Tensor, pooled: torch.Tensor) -> BridgeOutput:
        text_self, image_self, text_cross, image_cross = (tuple(w) for w in self.weights)
        return BridgeOutput(
            text_states,
            image_states,
            pooled,
            hidden_states=tuple(tuple(s) for s in self.states) if self.hidden_states else None,
            attentions=(text_self, image_self) if self.attentions and text_cross else None,
            cross_attentions=text_cross if self.attentions and text_cross else None,
            image_cross_attentions=image_cross if self.attentions and image_cross else None,
        )


def _key_padding_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, Nk) 1/0 mask -> additive bias (B, 1, 1, Nk), so padded keys get -inf-like scores."""
    if mask is None:
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias = bias.masked_fill(mask == 0, torch.finfo(dtype).min)
    return bias[:, None, None, :]


def _pool(text_states: torch.Tensor, image_states: torch.Tensor) -> torch.Tensor:
    """[text first token ; mean image token]: the text CLS summarises the question, the mean sees every patch."""
    return torch.cat([text_states[:, 0], image_states.mean(dim=1)], dim=-1)  # (B, 2D)


def attention_flops(queries: int, keys: int, width: int) -> float:
    """Scores (Nq x Nk x D multiply-adds) and weighted sum (same again), all heads together."""
    return 4.0 * queries * keys * width


def stream_block_flops(tokens: int, other_tokens: int | None, width: int, ffn: int) -> float:
    """One `StreamBlock`: self-attention, cross-attention to `other_tokens` (None: none), feed-forward."""
    flops = 2.0 * tokens * 4 * width * width + attention_flops(tokens, tokens, width)  # q, kv (2x), out
    if other_tokens is not None:
        flops += 2.0 * tokens * 2 * width * width  # q and out on this stream
        flops += 2.0 * other_tokens * 2 * width * width  # kv on the other stream
        flops += attention_flops(tokens, other_tokens, width)
    return flops + 2.0 * tokens * 2 * width * ffn


BRIDGE_ATTN_IMPLEMENTATIONS = ("sdpa", "eager")  # MMFTConfig.bridge_attn_implementation


class Attention(nn.Module):
    """Multi-head attention on `scaled_dot_product_attention` (`implementation="sdpa"`) or an explicit softmax
    (`"eager"`, and whenever the weights are requested)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, implementation: str = "sdpa") -> None:
        super().__init__()
        self.implementation = implementation
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        # No key bias: it adds q.b to every score of a query alike, which softmax ignores, so its true gradient is 0
        # and AdamW would turn the rounding noise in it into lr-sized random steps (seen as run-to-run weight drift).
        self.key_value = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.value_bias = nn.Parameter(torch.zeros(hidden_size))
        self.output = nn.Linear(hidden_size, hidden_size)
        self.dropout = dropout

    def reset_parameters(self) -> None:
        """Initialise this module's own parameter (`_init_weights` asks every module with a bare parameter)."""
        nn.init.zeros_(self.value_bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, d)

    def forward(
        self,
        queries: torch.Tensor,  # (B, Nq, D)
        keys: torch.Tensor,  # (B, Nk, D)
        key_bias: torch.Tensor | None = None,  # (B, 1, 1, Nk)
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q = self._split_heads(self.query(queries))  # (B, H, Nq, d)
        k, v = self.key_value(keys).chunk(2, dim=-1)
        k, v = self._split_heads(k), self._split_heads(v + self.value_bias)  # 2 x (B, H, Nk, d)
        dropout = self.dropout if self.training else 0.0
        if need_weights or self.implementation == "eager":
            scores = q @ k.transpose(-2, -1) / self.head_dim**0.5  # (B, H, Nq, Nk)
            if key_bias is not None:
                scores = scores + key_bias
            weights = scores.softmax(dim=-1)
            context = F.dropout(weights, dropout, self.training) @ v  # (B, H, Nq, d)
        else:
            weights = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias, dropout_p=dropout)
        context = context.transpose(1, 2).flatten(2)  # (B, Nq, D)
        return self.output(context), weights


class FeedForward(nn.Sequential):
    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(hidden_size, intermediate_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(intermediate_size, hidden_size),
        )


class StreamBlock(nn.Module):
    """One stream's half of a bridge layer: pre-LN self-attention, optional cross-attention, feed-forward."""

    def __init__(self, config, with_cross_attention: bool = True) -> None:
        super().__init__()
        width, heads, eps = config.hidden_size, config.num_attention_heads, config.layer_norm_eps
        self.self_norm = nn.LayerNorm(width, eps=eps)
        implementation = config.bridge_attn_implementation
        self.self_attention = Attention(width, heads, config.attention_dropout, implementation)
        self.cross_norm = nn.LayerNorm(width, eps=eps) if with_cross_attention else None
        self.cross_attention = (
            Attention(width, heads, config.attention_dropout, implementation) if with_cross_attention else None
        )
        self.ffn_norm = nn.LayerNorm(width, eps=eps)
        self.ffn = FeedForward(width, config.intermediate_size, config.hidden_dropout)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def attend_self(
        self, x: torch.Tensor, bias: torch.Tensor | None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        normed = self.self_norm(x)
        attended, weights = self.self_attention(normed, normed, bias, need_weights)
        return x + self.dropout(attended), weights

    def attend_other(
        self, x: torch.Tensor, other: torch.Tensor, other_bias: torch.Tensor | None, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # `other` is the other stream after its own self-attention in this layer (METER's ordering).
        attended, weights = self.cross_attention(self.cross_norm(x), other, other_bias, need_weights)
        return x + self.dropout(attended), weights

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class Bridge(nn.Module):
    """Interface of every fusion: (text tokens, image tokens, text mask) -> `BridgeOutput`."""

    uses_attention: bool = False
    # `model.gradient_checkpointing_enable()` sets this flag and `_gradient_checkpointing_func` on every module that
    # has the attribute; attention bridges then recompute each layer in the backward pass instead of storing it.
    gradient_checkpointing: bool = False

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.pooled_size = 2 * config.hidden_size

    def flops(self, text_tokens: int, image_tokens: int) -> float:
        """Forward FLOPs of one sample (matmuls only, 2 per multiply-add). This default counts them once per token
        shape with torch's FLOP counter on a meta-device copy; bridges with a closed form override it."""
        config = self.config
        return _counted_flops(
            type(self), type(config), config.to_json_string(use_diff=False), text_tokens, image_tokens
        )

    def run_layer(self, layer: Callable[..., tuple], *args: Any) -> tuple:
        """Run one bridge layer, under activation checkpointing when it is switched on and gradients are needed."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(layer, *args)
        return layer(*args)

    def forward(
        self,
        text_states: torch.Tensor,
        image_states: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BridgeOutput:
        """Fuse `(B, Nt, D)` text and `(B, Nv, D)` image tokens; `text_mask` is `(B, Nt)` 1/0. `MMFTModel` passes all
        five arguments, positionally, so a subclass takes them all (it may ignore the flags it has nothing for)."""
        raise NotImplementedError


class CoAttentionBridge(Bridge):
    """METER / BridgeTower-style co-attention: each layer lets text attend to image and image attend to text."""

    uses_attention = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self.text_blocks = nn.ModuleList(StreamBlock(config) for _ in range(config.num_bridge_layers))
        self.image_blocks = nn.ModuleList(StreamBlock(config) for _ in range(config.num_bridge_layers))
        self.text_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.image_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def flops(self, text_tokens: int, image_tokens: int) -> float:
        width, ffn = self.config.hidden_size, self.config.intermediate_size
        per_layer = stream_block_flops(text_tokens, image_tokens, width, ffn)
        per_layer += stream_block_flops(image_tokens, text_tokens, width, ffn)
        return len(self.text_blocks) * per_layer

    def layer(self, index: int, text_states, image_states, text_bias, output_attentions: bool) -> tuple:
        """Bridge layer `index`: both self-attentions, both cross-attentions, both feed-forwards.

        Returns (text, image, text self, image self, text->image, image->text); the weights are None unless asked.
        """
        text_block, image_block = self.text_blocks[index], self.image_blocks[index]
        text_states, text_self = text_block.attend_self(text_states, text_bias, output_attentions)  # (B, Nt, D)
        image_states, image_self = image_block.attend_self(image_states, None, output_attentions)  # (B, Nv, D)
        # Both directions read the other stream as it was before this layer's cross-attention.
        new_text, text_cross = text_block.attend_other(text_states, image_states, None, output_attentions)
        image_states, image_cross = image_block.attend_other(image_states, text_states, text_bias, output_attentions)
        text_states = text_block.feed_forward(new_text)
        image_states = image_block.feed_forward(image_states)
        return text_states, image_states, text_self, image_self, text_cross, image_cross

    def forward(
        self, text_states, image_states, text_mask=None, output_attentions=False, output_hidden_states=False
    ) -> BridgeOutput:
        text_bias = _key_padding_bias(text_mask, text_states.dtype)  # (B, 1, 1, Nt)
        trace = LayerTrace(text_states, image_states, output_attentions, output_hidden_states)
        for index in range(len(self.text_blocks)):
            text_states, image_states, *weights = self.run_layer(
                self.layer, index, text_states, image_states, text_bias, output_attentions
            )
            trace.add(text_states, image_states, *weights)
        text_states, image_states = self.text_norm(text_states), self.image_norm(image_states)
        return trace.output(text_states, image_states, _pool(text_states, image_states))


class CrossAttentionBridge(Bridge):
    """One-way fusion: text attends to image in every layer; image tokens pass through unchanged."""

    uses_attention = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self.text_blocks = nn.ModuleList(StreamBlock(config) for _ in range(config.num_bridge_layers))
        self.text_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def flops(self, text_tokens: int, image_tokens: int) -> float:
        width, ffn = self.config.hidden_size, self.config.intermediate_size
        return len(self.text_blocks) * stream_block_flops(text_tokens, image_tokens, width, ffn)

    def layer(self, index: int, text_states, image_states, text_bias, output_attentions: bool) -> tuple:
        """Bridge layer `index`: text self-attention, text->image cross-attention, feed-forward.

        Returns (text (B, Nt, D), text self weights, text->image weights (B, H, Nt, Nv)); weights None unless asked.
        """
        block = self.text_blocks[index]
        text_states, text_self = block.attend_self(text_states, text_bias, output_attentions)
        text_states, text_cross = block.attend_other(text_states, image_states, None, output_attentions)
        return block.feed_forward(text_states), text_self, text_cross

    def forward(
        self, text_states, image_states, text_mask=None, output_attentions=False, output_hidden_states=False
    ) -> BridgeOutput:
        text_bias = _key_padding_bias(text_mask, text_states.dtype)
        trace = LayerTrace(text_states, image_states, output_attentions, output_hidden_states)
        for index in range(len(self.text_blocks)):
            text_states, text_self, text_cross = self.run_layer(
                self.layer, index, text_states, image_states, text_bias, output_attentions
            )
            trace.add(text_states, None, text_self, None, text_cross, None)  # the image stream passes unchanged
        text_states = self.text_norm(text_states)
        return trace.output(text_states, image_states, _pool(text_states, image_states))


class ConcatBridge(Bridge):
    """Late fusion: [text CLS ; mean image token] through an MLP. No token-level interaction."""

    def __init__(self, config) -> None:
        super().__init__(config)
        width = config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(2 * width, 2 * width), nn.GELU(), nn.Dropout(config.hidden_dropout))

    def flops(self, text_tokens: int, image_tokens: int) -> float:
        return 2.0 * (2 * self.config.hidden_size) ** 2

    def forward(
        self, text_states, image_states, text_mask=None, output_attentions=False, output_hidden_states=False
    ) -> BridgeOutput:
        trace = LayerTrace(text_states, image_states, output_attentions, output_hidden_states)
        return trace.output(text_states, image_states, self.mlp(_pool(text_states, image_states)))


class ProductBridge(Bridge):
    """Late fusion by element-wise product of the pooled streams (the easy-VQA reference model's fusion)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        width = config.hidden_size
        # Each factor is layer-normed: a product of two small initial projections would start with no gradient.
        self.text_proj = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width, eps=config.layer_norm_eps))
        self.image_proj = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width, eps=config.layer_norm_eps))
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(config.hidden_dropout))

    def flops(self, text_tokens: int, image_tokens: int) -> float:
        width = self.config.hidden_size
        return 2.0 * 2 * width * width + 2.0 * width * 2 * width  # both factor projections, then the MLP

    def forward(
        self, text_states, image_states, text_mask=None, output_attentions=False, output_hidden_states=False
    ) -> BridgeOutput:
        fused = self.text_proj(text_states[:, 0]) * self.image_proj(image_states.mean(1))  # (B, D)
        trace = LayerTrace(text_states, image_states, output_attentions, output_hidden_states)
        return trace.output(text_states, image_states, self.mlp(fused))  # pooled (B, 2D)


BRIDGES: dict[str, type[Bridge]] = {
    "co_attention": CoAttentionBridge,
    "cross_attention": CrossAttentionBridge,
    "concat": ConcatBridge,
    "product": ProductBridge,
}


def register_bridge(name: str, bridge_class: type[Bridge]) -> type[Bridge]:
    """Register `bridge_class` under `name`, so that `MMFTConfig(bridge=name)` builds it; returns the class."""
    if not (isinstance(bridge_class, type) and issubclass(bridge_class, Bridge)):
        raise TypeError(f"register_bridge({name!r}, ...): {bridge_class!r} is not a subclass of mmft.bridge.Bridge")
    BRIDGES[name] = bridge_class
    return bridge_class


def build_bridge(config) -> Bridge:
    """Instantiate the bridge named by `config.bridge` (validated by `MMFTConfig`)."""
    return BRIDGES[config.bridge](config)


@functools.lru_cache(maxsize=64)
def _counted_flops(
    bridge_class: type[Bridge], config_class: type, config_json: str, text_tokens: int, image_tokens: int
) -> float:
    import json

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    config = config_class.from_dict(json.loads(config_json))
    width = config.hidden_size
    with torch.device("meta"):
        bridge = bridge_class(config).eval()
        text, image = torch.empty(1, text_tokens, width), torch.empty(1, image_tokens, width)
        # The math backend runs attention as matmuls, which the counter sees (fused CPU kernels it does not count).
        with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            bridge(text, image, torch.ones(1, text_tokens, dtype=torch.long))
    return float(counter.get_total_flops())
