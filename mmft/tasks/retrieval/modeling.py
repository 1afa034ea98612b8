"""`MMFTForImageTextRetrieval`: a dual encoder (contrastive, as CLIP) whose top candidates the bridge re-ranks (ITM).

Each tower's pooled features are projected into a shared space (the `pooler_output` of `get_image_features` /
`get_text_features`), so a gallery is embedded once and searched by dot product. The bridge with a matching head
(`match`) scores an (image, text) pair jointly, which is too slow for a whole gallery but sharper: ALBEF, BLIP and
BridgeTower re-rank the dual encoder's top-k with it. Training sums both losses (`mmft.contrastive`): symmetric
InfoNCE with a learnable temperature, and matching on hard negatives mined from the in-batch similarities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, can_return_tuple

from ...auto import new_auto_class
from ...configuration_mmft import MMFTConfig
from ...contrastive import PairBatch, contrastive_loss, gather_pairs, matching_examples, matching_loss, world
from ...features import masked_mean
from ...heads import ClassificationHead, ContrastiveHead
from ...modeling_mmft import MMFTModel, MMFTPreTrainedModel
from ...modeling_outputs import MMFTModelOutput
from ...rerank import RERANK_SCORES
from .pipeline import ImageTextMatchingPipeline

MATCH_LABELS = ("no match", "match")  # the matching head's classes, in id order

AutoModelForImageTextRetrieval = new_auto_class(
    "AutoModelForImageTextRetrieval",
    "Loads an image-text retrieval model (e.g. `MMFTForImageTextRetrieval`) from a saved folder.",
)


@dataclass
class MMFTRetrievalOutput(ModelOutput):
    """
    loss (with `return_loss=True`, the default): contrastive + matching loss.
    logits (`(B, N)`): scaled similarities of this batch's captions to the N images of the batch (CLIP's
        `logits_per_text`), gathered from every process when training.
    With `output_attentions` or `output_hidden_states` (argument or config field) also: the loss's two parts,
    `logits_per_image` (`(B, N)`), the L2-normalised embeddings `text_embeds` / `image_embeds` (`(B, P)`), and the
    bridge run on the batch's aligned pairs, as the matching head reads them: `match_logits` (`(B, 2)`: no match,
    match), `pooled` and the `MMFTModelOutput` fields the flags ask for. Otherwise only loss and logits, because the
    Trainer gathers every tensor an output holds during evaluation.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None
    matching_loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    match_logits: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    image_grid: tuple[int, int] | None = None
    hidden_states: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    attentions: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    image_cross_attentions: tuple[torch.Tensor, ...] | None = None


class MMFTForImageTextRetrieval(MMFTPreTrainedModel):
    """
    Image-text retrieval: a contrastive dual encoder over the two towers, and an image-text matching head over the
    bridge that re-ranks the dual encoder's top candidates.

    `forward(pixel_values, input_ids, attention_mask, image_ids)` takes aligned (image, caption) pairs; `image_ids`
    (`(B,)`) says which rows show the same image, so they are not each other's negatives.
    """

    auto_class, pipeline_class = AutoModelForImageTextRetrieval, ImageTextMatchingPipeline
    pipeline_task = "mmft-image-text-retrieval"

    def __init__(self, config: MMFTConfig, vision_tower=None, text_tower=None) -> None:
        config.id2label = dict(enumerate(MATCH_LABELS))
        config.label2id = {label: i for i, label in enumerate(MATCH_LABELS)}
        super().__init__(config)
        # read as `self.core`; the attribute's name is the `mmft.` prefix of every checkpoint key (base_model_prefix)
        self.mmft = MMFTModel(config, vision_tower, text_tower)
        width = config.hidden_size
        self.contrastive = ContrastiveHead(width, config.projection_dim or width, config.logit_scale_init_value)
        self.matching = ClassificationHead(self.core.bridge.pooled_size, len(MATCH_LABELS), config.layer_norm_eps)
        self.post_init()

    # -- the dual encoder ------------------------------------------------------------------------------------------
    def image_embedding(self, image_states: torch.Tensor) -> torch.Tensor:
        """Projected image tokens (B, Nv, D) -> one embedding per image in the shared space (B, P), unnormalised."""
        return self.contrastive.image_projection(image_states.mean(dim=1))

    def text_embedding(self, text_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Projected text tokens (B, Nt, D) -> one embedding per text in the shared space (B, P), unnormalised."""
        return self.contrastive.text_projection(masked_mean(text_states, attention_mask))

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """`MMFTModel.get_image_features` (no bridge) with `pooler_output` projected, as in CLIP, to the image
        embedding in the shared space (B, P), unnormalised: what `image_embedding` gives in forward."""
        features = self.core.get_image_features(pixel_values, output_attentions, output_hidden_states, return_dict=True)
        features.pooler_output = self.contrastive.image_projection(features.pooler_output)  # (B, P)
        return features

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """`MMFTModel.get_text_features` (no bridge) with `pooler_output` projected, as in CLIP, to the text
        embedding in the shared space (B, P), unnormalised: what `text_embedding` gives in forward."""
        features = self.core.get_text_features(
            input_ids, attention_mask, output_attentions, output_hidden_states, return_dict=True
        )
        features.pooler_output = self.contrastive.text_projection(features.pooler_output)  # (B, P)
        return features

    # -- the matching head -------------------------------------------------------------------------------------------
    def match_states(
        self, image_states: torch.Tensor, text_states: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Matching logits (B, 2) of aligned pairs from their projected token states (no tower runs)."""
        fused = self.core.bridge(text_states, image_states, attention_mask)
        return self.matching(fused.pooled)  # (B, 2): [no match, match]

    def match(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Matching logits (B, 2) of aligned (image, text) pairs through the towers and the bridge."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        image_states, _ = self.core.image_states(pixel_values)
        return self.match_states(image_states, self.core.text_states(input_ids, attention_mask), attention_mask)

    @staticmethod
    def match_score(logits: torch.Tensor) -> torch.Tensor:
        """One score per pair from matching logits (B, 2): the log-odds of a match (softmax-equivalent ranking)."""
        return logits[:, 1] - logits[:, 0]

    def rerank_score(self, match_logits: torch.Tensor, similarities: torch.Tensor) -> torch.Tensor:
        """Re-ranking scores (B,) of pairs from their matching logits (B, 2) and cosine similarities (B,), by
        `config.rerank_score` (default: match log-odds + the dual encoder's scaled similarity)."""
        similarities = similarities.to(match_logits.device, match_logits.dtype)
        scaled = self.contrastive.logit_scale().to(similarities) * similarities
        return RERANK_SCORES[self.config.rerank_score](self.match_score(match_logits), scaled)

    def head_flops(self, image_tokens: int, text_tokens: int) -> float:
        """Per training pair the bridge and the matching head also run on its two mined negatives."""
        matching = sum(
            2.0 * m.in_features * m.out_features for m in self.matching.modules() if isinstance(m, nn.Linear)
        )
        return super().head_flops(image_tokens, text_tokens) + 2 * (
            self.core.bridge.flops(text_tokens, image_tokens) + matching
        )

    # -- forward -------------------------------------------------------------------------------------------------------
    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_ids: torch.Tensor | None = None,
        return_loss: bool = True,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> MMFTRetrievalOutput:
        """Similarities `(B, B)` of the batch's captions to its images and, with `return_loss`, the training loss.
        The output flags default to the config fields; `return_dict=False` (or `config.return_dict=False`) returns
        `MMFTRetrievalOutput.to_tuple()`."""
        flags = self.output_flags(output_attentions, output_hidden_states)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if image_ids is None:  # every row its own image
            image_ids = torch.arange(len(input_ids), device=input_ids.device)
        image_states, grid = self.core.image_states(pixel_values)  # (B, Nv, D)
        text_states = self.core.text_states(input_ids, attention_mask)  # (B, Nt, D)
        image_embeds = F.normalize(self.image_embedding(image_states), dim=-1)  # (B, P)
        text_embeds = F.normalize(self.text_embedding(text_states, attention_mask), dim=-1)
        local = PairBatch(image_embeds, text_embeds, image_ids, image_states, text_states, attention_mask)
        if return_loss:
            output = self.loss(local)
        else:
            logits = self.contrastive.logit_scale() * text_embeds @ image_embeds.T  # (B, B)
            output = MMFTRetrievalOutput(logits=logits, logits_per_image=logits.T)
        if not any(flags):
            return MMFTRetrievalOutput(loss=output.loss, logits=output.logits)
        # Extras only on request: the bridge over the aligned pairs (what `match` scores), as `MMFTModel` returns it.
        extra = {"output_hidden_states": True} if flags[1] else {}
        fused = MMFTModelOutput(
            **self.core.bridge(text_states, image_states, attention_mask, flags[0], **extra), image_grid=grid
        )
        kept = ("pooled", "image_grid", "hidden_states", "attentions", "cross_attentions", "image_cross_attentions")
        parts = ("loss", "logits", "contrastive_loss", "matching_loss", "logits_per_image")
        return MMFTRetrievalOutput(
            **{k: output.get(k) for k in parts},
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            match_logits=self.matching(fused.pooled),
            **{k: fused.get(k) for k in kept},
        )

    def loss(self, local: PairBatch) -> MMFTRetrievalOutput:
        """Contrastive + matching loss of this process's pairs against the batch of every process."""
        gather = self.config.gather_negatives
        world_size = world()[1] if gather else 1
        local, gathered, offset = gather_pairs(local, gather)
        scale = self.contrastive.logit_scale()
        contrastive, logits_t2i, logits_i2t = contrastive_loss(local, gathered, offset, scale, world_size)
        images, texts, mask, targets, weights = matching_examples(local, gathered, offset, logits_t2i, logits_i2t)
        matching = matching_loss(
            self.match_states(images, texts, mask), targets, weights, gathered.image_ids, world_size
        )
        return MMFTRetrievalOutput(
            loss=contrastive + matching,
            logits=logits_t2i,
            contrastive_loss=contrastive.detach(),
            matching_loss=matching.detach(),
            logits_per_image=logits_i2t,
        )


__all__ = ["MATCH_LABELS", "AutoModelForImageTextRetrieval", "MMFTForImageTextRetrieval", "MMFTRetrievalOutput"]
