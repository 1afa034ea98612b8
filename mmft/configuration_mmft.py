"""`MMFTConfig`: the configuration of a vision tower + text tower + cross-modal bridge (+ task head)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .bridge import BRIDGE_ATTN_IMPLEMENTATIONS, BRIDGES
from .rerank import RERANK_SCORES


def check_prefix_fields(
    num_query_tokens: int, prefix_answer_loss_weight: float, prefix_answer_query: bool = False, flag: str = ""
) -> None:
    """The decoder prefix's fields, checked by `MMFTConfig` and, with `flag="--"`, by the recipes' flags while
    parsing (so the message names what the user wrote)."""
    if num_query_tokens < 0:
        raise ValueError(f"{flag}num_query_tokens must be >= 0 (0: prefix every image state), got {num_query_tokens}")
    if not prefix_answer_loss_weight >= 0:
        raise ValueError(f"{flag}prefix_answer_loss_weight must be >= 0 (0: off), got {prefix_answer_loss_weight}")
    if prefix_answer_query and not (num_query_tokens > 0 and prefix_answer_loss_weight > 0):
        raise ValueError(
            f"{flag}prefix_answer_query adds a learned query for the auxiliary answer loss: it needs "
            f"{flag}num_query_tokens > 0 and {flag}prefix_answer_loss_weight > 0, got {num_query_tokens} and "
            f"{prefix_answer_loss_weight}"
        )


def check_bridge_attn_implementation(value: str, flag: str = "") -> None:
    """The bridge's attention backend, checked by `MMFTConfig` and, with `flag="--"`, by the recipes' flags."""
    if value not in BRIDGE_ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown {flag}bridge_attn_implementation {value!r}; known: {', '.join(BRIDGE_ATTN_IMPLEMENTATIONS)}"
        )


@strict
class MMFTConfig(PreTrainedConfig):
    r"""
    Configuration of an mmft model. It stores the towers' full configurations, so a saved folder rebuilds the whole
    model with no network access and no tower download.

    Args:
        vision_config (`dict` or `PreTrainedConfig`):
            The vision tower's config: any HF vision model (`vit`, `clip_vision_model`, `siglip_vision_model`,
            `dinov2`, ...) or a `timm_wrapper` config (`architecture` + `model_args`) for a timm model.
        text_config (`dict` or `PreTrainedConfig`):
            The text tower's config: any HF encoder (`bert`, `roberta`, `deberta-v2`, ...).
        bridge (`str`, defaults to `"co_attention"`):
            The fusion, one of `mmft.bridge.BRIDGES`: `co_attention`, `cross_attention`, `concat`, `product`.
        num_bridge_layers (`int`, defaults to 2): layers of an attention bridge (ignored by `concat` / `product`).
        hidden_size (`int`, defaults to 256): bridge width; both towers are projected to it.
        num_attention_heads (`int`, defaults to 4): heads of every bridge attention; must divide `hidden_size`.
        intermediate_size (`int`, *optional*): bridge feed-forward width; defaults to `4 * hidden_size`.
        hidden_dropout (`float`, defaults to 0.1), attention_dropout (`float`, defaults to 0.0): bridge dropouts.
        bridge_attn_implementation (`str`, defaults to `"sdpa"`):
            How the bridge's (and the caption prefix's) attention is computed, one of `BRIDGE_ATTN_IMPLEMENTATIONS`:
            `"sdpa"` (PyTorch's `scaled_dot_product_attention`, the faster choice on a GPU) or `"eager"` (explicit
            softmax). Under bf16 autocast on a CPU, eager runs the bridge 1.6-1.7x faster (PyTorch's CPU
            flash-attention backward has a large fixed cost per call); in fp32 it is no faster
            (`benchmarks/bridge_attention.py`).
        initializer_range (`float`, *optional*):
            Std of the truncated-normal init of the bridge, projection and head weights. `None` (default): each
            layer gets `fan_in ** -0.5`, which keeps activations and gradients at unit scale whatever the widths.
            (A fixed 0.02, BERT's value, starved the from-scratch vision tower of gradient at width 128; see
            docs/ablation.md.) Towers always keep their own init.
        image_position_embeddings (`bool`, defaults to `True`):
            Add fixed 2-D sin-cos positions to the tokens of feature-map towers (CNNs), which carry no position of
            their own once flattened. ViT-like towers already embed positions and are left alone.
        vision_pretrained_from / text_pretrained_from (`str`, *optional*):
            Where each tower's weights came from (`None`: trained from scratch); shown in model cards and logs.
        class_weights (`list[float]`, *optional*):
            Classification heads: one loss weight per label (cross-entropy class weights; BCE `pos_weight` for
            multi-label problems).
        projection_dim (`int`, *optional*):
            Retrieval: width of the shared image-text embedding space; defaults to `hidden_size`.
        logit_scale_init_value (`float`, defaults to 2.6592):
            Retrieval: initial log of the contrastive logit scale (1 / temperature), CLIP's log(1 / 0.07).
        gather_negatives (`bool`, defaults to `True`):
            Retrieval: contrast each process's rows against the batch gathered from every process (with gradients),
            so N processes with batch B train like one process with batch N x B. `False` keeps each process to its
            own batch (cheaper, not equivalent).
        rerank_score (`str`, defaults to `"match+similarity"`):
            Retrieval: how a re-ranked candidate is scored (`mmft.rerank.RERANK_SCORES`): the matching head's
            log-odds plus the dual encoder's scaled similarity (BLIP-style), or `"match"` alone (ALBEF-style).
        decoder_config (`dict` or `PreTrainedConfig`, *optional*):
            Captioning: the config of the causal language model that writes the caption (any `AutoModelForCausalLM`
            type: `llama`, `gpt2`, `qwen2`, ...). `None` for models without a decoder.
        num_query_tokens (`int`, defaults to 8):
            Captioning: learned queries that compress the bridge's states into the decoder's prefix (a small
            cross-attention block); `0` prefixes every bridge image state instead (LLaVA's projector, no compression).
        decoder_pretrained_from (`str`, *optional*): where the decoder's weights came from (`None`: random init).
        prefix_answer_loss_weight (`float`, defaults to 0.0):
            Captioning and generative VQA, training only: weight of an auxiliary loss that reads the first answer
            (caption) token straight off the prefix's last vector through the decoder's output layer. It gives the
            bridge a direct gradient (otherwise its only signal comes back through every decoder layer); `0` turns
            it off. Generation never uses it.
        prefix_answer_query (`bool`, defaults to `False`):
            With `prefix_answer_loss_weight` > 0 and `num_query_tokens` > 0: the auxiliary loss reads one more
            learned query, which no other query attends to and the decoder never reads, instead of the prefix's last
            vector. The bridge still gets the direct gradient, but the decoder cannot take the auxiliary answer as a
            shortcut.

    Example:

    ```python
    >>> from transformers import BertConfig, ViTConfig
    >>> from mmft import MMFTConfig
    >>> config = MMFTConfig(vision_config=ViTConfig(), text_config=BertConfig(), bridge="co_attention")
    ```
    """

    model_type = "mmft"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit", optional=True),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True),
        "decoder_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", optional=True),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    bridge: str = "co_attention"
    num_bridge_layers: int = 2
    hidden_size: int = 256
    num_attention_heads: int = 4
    intermediate_size: int | None = None
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.0
    bridge_attn_implementation: str = "sdpa"
    layer_norm_eps: float = 1e-6
    initializer_range: float | None = None
    image_position_embeddings: bool = True
    vision_pretrained_from: str | None = None
    text_pretrained_from: str | None = None
    class_weights: list[float] | None = None
    projection_dim: int | None = None
    logit_scale_init_value: float = 2.6592
    gather_negatives: bool = True
    rerank_score: str = "match+similarity"
    decoder_config: dict | PreTrainedConfig | None = None
    num_query_tokens: int = 8
    decoder_pretrained_from: str | None = None
    prefix_answer_loss_weight: float = 0.0
    prefix_answer_query: bool = False

    def __post_init__(self, **kwargs):
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        # Checked here, not in a strict `validate_*` hook, so callers get a plain ValueError naming the field.
        self.check_bridge_fields()
        super().__post_init__(**kwargs)
        self.check_decoder_fields()

    def check_bridge_fields(self) -> None:
        """Reject configs that could only fail later, deep inside a forward pass."""
        if self.bridge not in BRIDGES:
            raise ValueError(f"unknown bridge {self.bridge!r}; known: {', '.join(sorted(BRIDGES))}")
        for name in ("hidden_size", "num_attention_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); try num_attention_heads in "
                f"{[h for h in range(1, 17) if self.hidden_size % h == 0]}"
            )
        if BRIDGES[self.bridge].uses_attention and self.num_bridge_layers < 1:
            raise ValueError(
                f"bridge {self.bridge!r} needs num_bridge_layers >= 1, got {self.num_bridge_layers}; "
                "use bridge='concat' or 'product' for a fusion without layers"
            )
        if self.initializer_range is not None and not self.initializer_range > 0:
            raise ValueError(
                f"initializer_range must be > 0 (or None for fan-in scaling), got {self.initializer_range}"
            )
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        check_bridge_attn_implementation(self.bridge_attn_implementation)
        if self.projection_dim is not None and self.projection_dim <= 0:
            raise ValueError(f"projection_dim must be > 0 (or None for hidden_size), got {self.projection_dim}")
        if self.rerank_score not in RERANK_SCORES:
            raise ValueError(f"unknown rerank_score {self.rerank_score!r}; known: {', '.join(RERANK_SCORES)}")
        if self.class_weights is not None and not all(w > 0 for w in self.class_weights):
            raise ValueError(f"class_weights must all be > 0, got {self.class_weights}")

    def check_decoder_fields(self) -> None:
        """A caption decoder must be a causal language model; the prefix needs a non-negative query count."""
        check_prefix_fields(self.num_query_tokens, self.prefix_answer_loss_weight, self.prefix_answer_query)
        if self.decoder_config is None:
            return
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        if self.decoder_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise ValueError(
                f"decoder_config is a {self.decoder_config.model_type!r} config, which has no causal language model "
                "(AutoModelForCausalLM); use a decoder such as llama, gpt2, qwen2 or the offline alias 'smollm2'"
            )

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PreTrainedConfig:
        """The text-output config is the caption decoder's when there is one (generation reads its vocabulary and
        layers from here); the text-input config stays the text tower's."""
        if self.decoder_config is not None and not encoder:
            return self.decoder_config
        return super().get_text_config(decoder=decoder, encoder=encoder)


__all__ = ["MMFTConfig"]
