"""`MMFTForImageTextRetrieval`: a dual encoder (contrastive, as CLIP) whose top candidates the bridge re-ranks (ITM).

Each tower's pooled features are projected into a shared space (`get_image_features` / `get_text_features`), so a
gallery is embedded once and searched by dot product. The bridge with a matching head (`match`) scores an (image,
text) pair jointly, which is too slow for a whole gallery but sharper: ALBEF, BLIP and BridgeTower re-rank the
dual encoder's top-k with it. Training sums both losses (`mmft.contrastive`): symmetric InfoNCE with a learnable
temperature, and matching on hard negatives mined from the in-batch similarities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_mmft import MMFTConfig
from .contrastive import PairBatch, contrastive_loss, gather_pairs, matching_examples, matching_loss, world
from .heads import ClassificationHead, ContrastiveHead, LogitScale
from .modeling_mmft import MMFTModel, MMFTPreTrainedModel

MATCH_LABELS = ("no match", "match")  # the matching head's classes, in id order


@dataclass
class MMFTRetrievalOutput(ModelOutput):
    """
    loss: contrastive + matching loss (with `return_loss=True`); contrastive_loss and matching_loss separately.
    logits_per_text (`(B, N)`), logits_per_image (`(B, N)`): scaled similarities of this batch's captions (images) to
    the N images (captions) of the batch, gathered from every process when training.
    text_embeds, image_embeds (`(B, P)`): L2-normalised embeddings in the shared space.
    """

    loss: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None
    matching_loss: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens: (B, N, D), (B, N) -> (B, D)."""
    weights = mask.unsqueeze(-1).to(states.dtype)  # (B, N, 1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class MMFTForImageTextRetrieval(MMFTPreTrainedModel):
    """
    Image-text retrieval: a contrastive dual encoder over the two towers, and an image-text matching head over the
    bridge that re-ranks the dual encoder's top candidates.

    `forward(pixel_values, input_ids, attention_mask, image_ids)` takes aligned (image, caption) pairs; `image_ids`
    (`(B,)`) says which rows show the same image, so they are not each other's negatives.
    """

    def __init__(self, config: MMFTConfig, vision_tower=None, text_tower=None) -> None:
        config.id2label = dict(enumerate(MATCH_LABELS))
        config.label2id = {label: i for i, label in enumerate(MATCH_LABELS)}
        super().__init__(config)
        self.mmft = MMFTModel(config, vision_tower, text_tower)
        width = config.hidden_size
        self.contrastive = ContrastiveHead(width, config.projection_dim or width, config.logit_scale_init_value)
        self.matching = ClassificationHead(self.mmft.bridge.pooled_size, len(MATCH_LABELS), config.layer_norm_eps)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LogitScale):  # a bare parameter the base class's Linear/LayerNorm branches miss
            module.reset_parameters()

    # -- the dual encoder ------------------------------------------------------------------------------------------
    def image_embedding(self, image_states: torch.Tensor) -> torch.Tensor:
        """Projected image tokens (B, Nv, D) -> one embedding per image in the shared space (B, P), unnormalised."""
        return self.contrastive.image_projection(image_states.mean(dim=1))

    def text_embedding(self, text_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Projected text tokens (B, Nt, D) -> one embedding per text in the shared space (B, P), unnormalised."""
        return self.contrastive.text_projection(masked_mean(text_states, attention_mask))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image embeddings in the shared space (B, P), unnormalised (as CLIP's); no bridge."""
        return self.image_embedding(self.mmft.image_states(pixel_values)[0])

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text embeddings in the shared space (B, P), unnormalised (as CLIP's); no bridge."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.text_embedding(self.mmft.text_states(input_ids, attention_mask), attention_mask)

    # -- the matching head -------------------------------------------------------------------------------------------
    def match_states(self, image_states: torch.Tensor, text_states: torch.Tensor,
                     attention_mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Matching logits (B, 2) of aligned pairs from their projected token states (no tower runs)."""
        fused = self.mmft.bridge(text_states, image_states, attention_mask)
        return self.matching(fused.pooled)  # (B, 2): [no match, match]

    def match(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
              attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:  # fmt: skip
        """Matching logits (B, 2) of aligned (image, text) pairs through the towers and the bridge."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        image_states, _ = self.mmft.image_states(pixel_values)
        return self.match_states(image_states, self.mmft.text_states(input_ids, attention_mask), attention_mask)

    @staticmethod
    def match_score(logits: torch.Tensor) -> torch.Tensor:
        """One score per pair from matching logits (B, 2): the log-odds of a match (softmax-equivalent ranking)."""
        return logits[:, 1] - logits[:, 0]

    def head_flops(self, image_tokens: int, text_tokens: int) -> float:
        """Per training pair the bridge and the matching head also run on its two mined negatives."""
        matching = sum(2.0 * m.in_features * m.out_features for m in self.matching.modules() if isinstance(m, nn.Linear))
        return super().head_flops(image_tokens, text_tokens) + 2 * (self.mmft.bridge.flops(text_tokens, image_tokens)
                                                                     + matching)  # fmt: skip

    # -- forward -------------------------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_ids: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs: Any,
    ) -> MMFTRetrievalOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if image_ids is None:  # every row its own image
            image_ids = torch.arange(len(input_ids), device=input_ids.device)
        image_states, _ = self.mmft.image_states(pixel_values)  # (B, Nv, D)
        text_states = self.mmft.text_states(input_ids, attention_mask)  # (B, Nt, D)
        image_embeds = F.normalize(self.image_embedding(image_states), dim=-1)  # (B, P)
        text_embeds = F.normalize(self.text_embedding(text_states, attention_mask), dim=-1)
        local = PairBatch(image_embeds, text_embeds, image_ids, image_states, text_states, attention_mask)
        if not return_loss:
            logits = self.contrastive.logit_scale() * text_embeds @ image_embeds.T  # (B, B)
            return MMFTRetrievalOutput(logits_per_text=logits, logits_per_image=logits.T, text_embeds=text_embeds,
                                       image_embeds=image_embeds)  # fmt: skip
        return self.loss(local)

    def loss(self, local: PairBatch) -> MMFTRetrievalOutput:
        """Contrastive + matching loss of this process's pairs against the batch of every process."""
        gather = self.config.gather_negatives
        world_size = world()[1] if gather else 1
        local, gathered, offset = gather_pairs(local, gather)
        scale = self.contrastive.logit_scale()
        contrastive, logits_t2i, logits_i2t = contrastive_loss(local, gathered, offset, scale, world_size)
        images, texts, mask, targets, weights = matching_examples(local, gathered, offset, logits_t2i, logits_i2t)
        matching = matching_loss(self.match_states(images, texts, mask), targets, weights, gathered.image_ids,
                                 world_size)  # fmt: skip
        return MMFTRetrievalOutput(
            loss=contrastive + matching,
            contrastive_loss=contrastive.detach(),
            matching_loss=matching.detach(),
            logits_per_text=logits_t2i,
            logits_per_image=logits_i2t,
            text_embeds=local.text_embeds,
            image_embeds=local.image_embeds,
        )


__all__ = ["MATCH_LABELS", "MMFTForImageTextRetrieval", "MMFTRetrievalOutput"]
