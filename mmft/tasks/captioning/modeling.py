"""`MMFTForConditionalGeneration`: an image (with a fixed prompt) in, a caption out, written by a causal language model.

The vision and text towers and the bridge fuse the image with the prompt as in every mmft model. `CaptionPrefix`
turns the bridge's states into a few vectors in the decoder's embedding space, which go in front of the caption
tokens (LLaVA-style prefix); the decoder, any `AutoModelForCausalLM`, writes the caption after them. The loss covers
caption tokens only: the prefix has no labels and padding is `-100`.

The prefix is put right after the caption's start token inside `forward`, whenever the decoder starts from an empty
cache, so `input_ids`, `labels` and the returned logits are caption positions only (the logits at the start token's
place are those of the prefix's last position, which predicts the first caption token), and `generate()` (greedy,
beam search, sampling, with or without the KV cache) runs through transformers' `GenerationMixin` unchanged:
positions come from the cache length, and the attention mask is widened by the prefix on every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForImageTextToText, GenerationMixin, PreTrainedConfig
from transformers.utils import ModelOutput, can_return_tuple

from ...bridge import StreamBlock, _key_padding_bias, attention_flops
from ...configuration_mmft import MMFTConfig
from ...labels import IGNORE_INDEX
from ...modeling_mmft import MMFTModel, MMFTPreTrainedModel
from ...modeling_outputs import MMFTModelOutput
from ...towers import TOWER_SPECS, BatchShapes, DecoderTower
from .pipeline import ImageToTextPipeline


@dataclass
class MMFTCaptionOutput(ModelOutput):
    """
    loss: mean cross-entropy of the next caption token, over caption tokens whose label is not -100; in training
        with `config.prefix_answer_loss_weight` > 0, plus that weight times `prefix_answer_loss`.
    prefix_answer_loss: in training with that weight, the cross-entropy of each row's first labelled token read off
        the prefix's last vector through the decoder's output layer (`MMFTForConditionalGeneration.prefix_answer_loss`).
    logits (`(B, T, V)`): next-token logits at the caption positions of this call (not the prefix); in training with
        labels only the last ones, from the first position that predicts a labelled token (`logit_positions`).
    cache: the decoder's KV cache (prefix included), for the next generation step.
    With `output_hidden_states` / `output_attentions` (argument or config field), on a call that reads the image:
    hidden_states / attentions / cross_attentions / image_cross_attentions: the bridge's, as `MMFTModelOutput` has
    them; decoder_hidden_states / decoder_attentions: the decoder's (prefix positions included).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    prefix_answer_loss: torch.Tensor | None = None
    cache: Any = None
    hidden_states: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    attentions: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    image_cross_attentions: tuple[torch.Tensor, ...] | None = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    decoder_attentions: tuple[torch.Tensor, ...] | None = None


class CaptionPrefix(nn.Module):
    """The bridge's states -> the decoder's prefix, (B, P, Dd).

    With `num_query_tokens` > 0, that many learned queries attend to each other and to the fused image and prompt
    states (one pre-LN bridge block: self-attention, cross-attention, feed-forward), so the decoder reads P =
    num_query_tokens vectors whatever the image size. With 0, every fused image state is projected (P = Nv).
    """

    def __init__(self, config: MMFTConfig, decoder_hidden_size: int) -> None:
        super().__init__()
        width = config.hidden_size
        # `prefix_answer_query`: one more learned query, after the decoder's, that only the auxiliary loss reads
        self.hidden_queries = int(bool(config.prefix_answer_query))
        queries = config.num_query_tokens + self.hidden_queries
        self.queries = nn.Embedding(queries, width) if config.num_query_tokens else None
        self.block = StreamBlock(config) if config.num_query_tokens else None
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.projection = nn.Linear(width, decoder_hidden_size)

    def forward(self, image_states: torch.Tensor, text_states: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """(B, P + hidden queries, Dd): the decoder's prefix, then the hidden answer query's vector if there is one."""
        if self.queries is None:
            states = image_states  # (B, Nv, D)
        else:
            batch, image_tokens = image_states.shape[:2]
            memory = torch.cat([image_states, text_states], dim=1)  # (B, Nv + Nt, D)
            mask = torch.cat([text_mask.new_ones(batch, image_tokens), text_mask], dim=1)
            ids = torch.arange(self.queries.num_embeddings, device=image_states.device).expand(batch, -1)
            states = self.queries(ids)  # (B, Nq, D)
            hidden = None  # no query attends to the hidden one (a masked key): the decoder's prefix is blind to it
            if self.hidden_queries:
                hidden = _key_padding_bias(ids < self.queries.num_embeddings - self.hidden_queries, states.dtype)
            states, _ = self.block.attend_self(states, hidden)
            states, _ = self.block.attend_other(states, memory, _key_padding_bias(mask, states.dtype), False)
            states = self.block.feed_forward(states)  # (B, Nq, D)
        return self.projection(self.norm(states))  # (B, P, Dd)

    @torch.no_grad()
    def match_scale(self, embeddings: torch.Tensor) -> None:
        """Start the prefix at the size (root mean square) of the decoder's token embeddings.

        The fan-in init gives unit-size outputs; a pretrained LM has never seen inputs that large (SmolLM2's
        embeddings are ~0.1), so the prefix would first swamp the residual stream it is added to.
        """
        self.projection.weight.mul_(embeddings.detach().float().pow(2).mean().sqrt().to(self.projection.weight.dtype))

    def flops(self, image_tokens: int, text_tokens: int) -> float:
        """Forward FLOPs per sample (matmuls only)."""
        width, out = self.projection.in_features, self.projection.out_features
        if self.queries is None:
            return 2.0 * image_tokens * width * out
        queries, memory = self.queries.num_embeddings, image_tokens + text_tokens  # the hidden query included
        ffn = self.block.ffn[0].out_features
        block = 2.0 * queries * 4 * width * width + attention_flops(queries, queries, width)  # self-attention
        block += 2.0 * queries * 2 * width * width + 2.0 * memory * 2 * width * width  # cross: q, out; k, v
        block += attention_flops(queries, memory, width) + 2.0 * queries * 2 * width * ffn
        return block + 2.0 * queries * width * out


class MMFTForConditionalGeneration(MMFTPreTrainedModel, GenerationMixin):
    """
    Writes a caption for an image: towers + bridge fuse the image with a fixed prompt, `CaptionPrefix` compresses
    the fused states into the decoder's embedding space, and the decoder (any causal LM) continues from there.

    Inputs: `pixel_values` (B, 3, H, W); `text_input_ids` / `text_attention_mask` (B, Nt), the prompt the text
    tower reads (`MMFTCaptionProcessor` adds it); `input_ids` / `attention_mask` (B, T), the caption so far in the
    decoder's vocabulary, starting with its start token; `labels` (B, T), usually `input_ids` with -100 on padding
    (shifted inside, as in every HF causal LM).

    Example:

    ```python
    >>> model = MMFTForConditionalGeneration.from_vision_text_pretrained(
    ...     vision="timm:resnet10t", text="minilm", decoder="smollm2", num_query_tokens=8)
    >>> ids = model.generate(**processor(images=image), max_new_tokens=24)
    >>> processor.decode_captions(ids)
    ```
    """

    auto_class, pipeline_task, pipeline_class = AutoModelForImageTextToText, "mmft-image-to-text", ImageToTextPipeline

    main_input_name = "input_ids"  # what generate() extends; the image comes in as `pixel_values`

    def __init__(self, config: MMFTConfig, vision_tower=None, text_tower=None, decoder: DecoderTower | None = None):
        super().__init__(config)
        if config.decoder_config is None:
            raise ValueError(
                "a captioning model needs MMFTConfig.decoder_config (a causal LM); build one with "
                "MMFTForConditionalGeneration.from_vision_text_pretrained(vision=..., text=..., decoder=...)"
            )
        # The decoder first: building it resolves its config's attention backend, which the core then finds set.
        self.decoder = decoder or TOWER_SPECS["decoder"].build(config.decoder_config)
        # read as `self.core`; the attribute's name is the `mmft.` prefix of every checkpoint key (base_model_prefix)
        self.mmft = MMFTModel(config, vision_tower, text_tower)
        self.caption_prefix = CaptionPrefix(config, self.decoder.hidden_size)
        present = {type(module).__name__ for module in self.decoder.modules()}
        self._no_split_modules = [
            *self.core._no_split_modules,
            *(set(self.decoder.model._no_split_modules or []) & present),
        ]
        self.post_init()

    # -- what shared code asks the model ----------------------------------------------------------------------------
    def towers(self) -> dict[str, nn.Module]:
        return {**super().towers(), "decoder": self.decoder}

    def get_input_embeddings(self) -> nn.Module:
        """The decoder's token embeddings: new caption tokens are added to the decoder's vocabulary."""
        return self.decoder.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.decoder.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.decoder.model.get_output_embeddings()

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Resize the decoder's token embeddings (and its output layer), e.g. after adding caption tokens to the
        decoder's tokenizer; `config.decoder_config.vocab_size` follows, so the saved folder rebuilds it."""
        resized = self.decoder.model.resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        self.config.decoder_config.vocab_size = resized.num_embeddings
        return resized

    def head_flops(self, image_tokens: int, text_tokens: int) -> float:
        """The prefix's forward FLOPs per sample (the decoder reports its own: `part_flops`)."""
        return self.caption_prefix.flops(image_tokens, text_tokens)

    def part_flops(self, shapes: BatchShapes) -> dict[str, float]:
        """As for every mmft model, plus the decoder's: it reads `[start] [prefix] [caption]` (the prefix in place
        of nothing, so prefix + caption positions) and gives logits at the caption positions."""
        captions = shapes.caption_tokens
        positions = self.caption_prefix_length(shapes.image_tokens) + captions
        return {**super().part_flops(shapes), "decoder": self.decoder.forward_flops(positions, captions)}

    def caption_prefix_length(self, image_tokens: int) -> int:
        return self.config.num_query_tokens or image_tokens

    # -- forward ---------------------------------------------------------------------------------------------------
    def image_prefix(
        self,
        pixel_values: torch.Tensor,
        text_input_ids: torch.Tensor | None,
        text_attention_mask: torch.Tensor | None,
        flags: tuple[bool, bool] = (False, False),
    ) -> tuple[torch.Tensor, MMFTModelOutput]:
        """The decoder prefix of a batch of images with their prompt, (B, P, Dd), and the bridge's output (with the
        attentions / hidden states `flags` ask for). With `config.prefix_answer_query` the prefix has one more vector
        at the end, (B, P + 1, Dd): the hidden answer query's, which `forward` keeps from the decoder."""
        if text_input_ids is None:
            raise ValueError(
                "the captioning model needs text_input_ids (the prompt the text tower reads); "
                "MMFTCaptionProcessor(images=...) adds them"
            )
        if text_attention_mask is None:
            text_attention_mask = torch.ones_like(text_input_ids)
        fused = self.core(pixel_values, text_input_ids, text_attention_mask, *flags, return_dict=True)
        return self.caption_prefix(fused.image_states, fused.text_states, text_attention_mask), fused

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        text_input_ids: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> MMFTCaptionOutput:
        """Next-token logits at the caption positions (and the loss with `labels`). The output flags default to the
        config fields; `return_dict=False` (or `config.return_dict=False`) returns `MMFTCaptionOutput.to_tuple()`."""
        flags = self.output_flags(output_attentions, output_hidden_states)
        if inputs_embeds is None:
            inputs_embeds = self.decoder.embed(input_ids)  # (B, T, Dd)
        batch, length = inputs_embeds.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=inputs_embeds.device)
        past = 0 if cache is None else cache.get_seq_length()
        fused = prefix = None
        if past == 0:  # the decoder starts here: put the image prefix in
            if pixel_values is None:
                raise ValueError("the first decoder step needs pixel_values (the image to caption)")
            prefix, fused = self.image_prefix(pixel_values, text_input_ids, text_attention_mask, flags)  # (B, P, Dd)
            answer_vector = prefix[:, -1]  # what the auxiliary loss reads: the hidden query's, else the prefix's last
            prefix = prefix[:, : prefix.shape[1] - self.caption_prefix.hidden_queries]
            # [start] [prefix] [caption]: the start token keeps position 0, where a pretrained LM expects a real
            # token (its attention sink); the prefix's last position then predicts the caption's first token.
            inputs_embeds = torch.cat([inputs_embeds[:, :1], prefix.to(inputs_embeds.dtype), inputs_embeds[:, 1:]], 1)
            prefix_length = prefix.shape[1]  # inputs_embeds is (B, 1 + P + T - 1, Dd)
        else:  # the cache holds the start token, the prefix and the caption so far; the mask covers all but the prefix
            prefix_length = past + length - attention_mask.shape[1]
        # The prefix is always attended to; the mask must cover every position the cache and this call hold.
        attention_mask = torch.cat(
            [attention_mask[:, :1], attention_mask.new_ones(batch, prefix_length), attention_mask[:, 1:]], dim=1
        )
        if use_cache is None:
            use_cache = labels is None and not self.training
        keep = self.logit_positions(labels, length)
        outputs = self.decoder(
            inputs_embeds,
            attention_mask,
            keep=keep,
            cache=cache,
            use_cache=use_cache,
            output_attentions=flags[0],
            output_hidden_states=flags[1],
        )
        logits = outputs.logits  # (B, keep, V): the last `keep` of the T caption positions
        loss = None
        if labels is not None:  # position t predicts token t + 1
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                labels[:, length - keep + 1 :].flatten(),
                ignore_index=IGNORE_INDEX,
            )
        prefix_answer_loss = None
        if labels is not None and prefix is not None and self.training and self.config.prefix_answer_loss_weight:
            prefix_answer_loss = self.prefix_answer_loss(answer_vector, labels)
            loss = loss + self.config.prefix_answer_loss_weight * prefix_answer_loss
        # Extras only on request: the Trainer gathers every tensor an output holds during evaluation.
        kept = ("hidden_states", "attentions", "cross_attentions", "image_cross_attentions")
        bridge = {k: fused.get(k) for k in kept} if fused is not None and any(flags) else {}
        return MMFTCaptionOutput(
            loss=loss,
            logits=logits,
            prefix_answer_loss=prefix_answer_loss,
            cache=getattr(outputs, "cache", None) if use_cache else None,
            decoder_hidden_states=outputs.hidden_states,
            decoder_attentions=outputs.attentions,
            **bridge,
        )

    def prefix_answer_loss(self, answer_vector: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each row's first labelled token (the answer's first word piece) as the decoder's output
        layer reads it off `answer_vector` (B, Dd) -> (B, V), skipping the decoder's layers: the prefix's last
        vector, or with `config.prefix_answer_query` the hidden query's, which the decoder never reads.

        Why: the bridge otherwise learns only through every decoder layer, and on a task where the answer needs
        the image and the question compared (easy-VQA's yes/no questions) that signal was too weak to leave a
        plateau reliably (docs/generative_vqa.md). With tied embeddings (SmolLM2) the loss pulls the vector towards
        the answer token's own embedding; read off the prefix's last vector, the decoder then reads it like a word,
        which can become a shortcut (it copies the bridge's guess instead of learning to answer), hence the hidden
        query. Rows without labels are skipped; 0 when no row has one.
        """
        labelled = labels != IGNORE_INDEX  # (B, T)
        if not labelled.any():
            return answer_vector.sum() * 0.0
        first = labels.gather(1, labelled.int().argmax(dim=1, keepdim=True)).squeeze(1)  # (B,)
        first = torch.where(labelled.any(dim=1), first, torch.full_like(first, IGNORE_INDEX))
        logits = self.get_output_embeddings()(answer_vector)  # (B, V)
        return F.cross_entropy(logits.float(), first, ignore_index=IGNORE_INDEX)

    def logit_positions(self, labels: torch.Tensor | None, length: int) -> int:
        """How many of the call's last positions get logits: all `length`, except in training with `labels`, where
        only those from the first one that predicts a labelled token do (the loss reads no others). A prompted
        answer's labels start after its prompt (`MMFTPromptProcessor` puts every answer at the same position), so
        training skips the output layer on the prompt: with SmolLM2's 49k-word vocabulary that layer costs as much
        per position as 8 of its 30 blocks."""
        if labels is None or not self.training:
            return length
        labelled = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero()
        return length - int(labelled[0]) if len(labelled) else length

    # -- factory ---------------------------------------------------------------------------------------------------
    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision: str | PreTrainedConfig,
        text: str | PreTrainedConfig,
        decoder: str | PreTrainedConfig = "smollm2",
        decoder_model_args: dict[str, Any] | None = None,
        decoder_attn_implementation: str | None = None,
        caption_token_ids: dict[str, int] | None = None,
        labels: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> MMFTForConditionalGeneration:
        """
        Join two towers and a causal LM decoder with a fresh bridge and prefix.

        Args:
            vision, text, **kwargs: as in `MMFTPreTrainedModel.from_vision_text_pretrained` (`num_query_tokens` and
                every other `MMFTConfig` field go in `kwargs`).
            decoder: a Hub id or folder loaded with `AutoModelForCausalLM`, the offline alias `smollm2`, or a config
                for a random decoder.
            decoder_model_args: overrides of the decoder's config fields, e.g. `{"num_hidden_layers": 12}`.
            decoder_attn_implementation: the decoder's attention backend (`"eager"`, `"sdpa"`, ...; transformers'
                `attn_implementation`); default: transformers' choice.
            caption_token_ids: `{"bos": ..., "eos": ..., "pad": ...}`, the caption start, end and padding ids in the
                decoder's vocabulary (`MMFTCaptionProcessor.caption_token_ids()`); default: the decoder config's.
        """
        loaded, source = TOWER_SPECS["decoder"].from_name(decoder, decoder_model_args)
        model = super().from_vision_text_pretrained(
            vision, text, decoder_config=loaded.model.config, decoder_pretrained_from=source, **kwargs
        )
        model.decoder = loaded  # the pretrained decoder replaces the random one __init__ built from its config
        if decoder_attn_implementation is not None:  # after __init__, which resolves the (shared) config's backend
            loaded.model.set_attn_implementation(decoder_attn_implementation)  # an unknown one: transformers says so
        model.caption_prefix.match_scale(loaded.model.get_input_embeddings().weight)
        ids = caption_token_ids or {
            "bos": loaded.model.config.bos_token_id,
            "eos": loaded.model.config.eos_token_id,
            "pad": loaded.model.config.pad_token_id,
        }
        model.set_caption_token_ids(**ids)
        return model

    def set_caption_token_ids(self, bos: int | None, eos: int | None, pad: int | None) -> None:
        """The caption's start, end and padding ids, which `generate()` starts from, stops at and pads with."""
        if bos is None or eos is None:
            raise ValueError(f"a captioning decoder needs start and end token ids; got bos={bos}, eos={eos}")
        pad = eos if pad is None else pad
        config = self.generation_config
        config.bos_token_id, config.eos_token_id, config.pad_token_id = bos, eos, pad
        config.decoder_start_token_id = None


__all__ = ["CaptionPrefix", "MMFTCaptionOutput", "MMFTForConditionalGeneration"]
