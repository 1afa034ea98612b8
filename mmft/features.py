"""`get_image_features` / `get_text_features`: one embedding per image or text from its tower alone (no bridge).

They follow transformers 5's feature contract (`CLIPModel.get_image_features` and the common model tests): a
`BaseModelOutputWithPooling` whose `pooler_output` is the embedding, with the tower's `last_hidden_state` and, when
`output_hidden_states` / `output_attentions` (default: the config fields) ask for them, the tower's `hidden_states`
and `attentions`. `return_dict=False` (or `config.return_dict=False`) returns `.to_tuple()`, which skips None
fields: `(last_hidden_state, pooler_output, [hidden_states], [attentions])`, so the embedding is `[1]`, as in CLIP.

What a timm vision tower gives for hidden states and attentions is described at `mmft.towers.VisionTower`.
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import can_return_tuple

from .towers import TowerOutput


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens: (B, N, D), (B, N) -> (B, D)."""
    weights = mask.unsqueeze(-1).to(states.dtype)  # (B, N, 1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class TowerFeaturesMixin:
    """The two feature methods of `MMFTModel`, which provides the towers, `project_image` / `project_text`,
    `_encode_text` (the frozen-tower cache) and `output_flags`."""

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """
        Image features from the vision tower alone: `pooler_output` is the mean projected image token (B, D) (the
        bridge width), `last_hidden_state` the tower's tokens (B, Nv, Dv) (a feature map flattened row-major).
        """
        output_attentions, output_hidden_states = self.output_flags(output_attentions, output_hidden_states)
        vision = self.vision_tower(pixel_values, output_attentions, output_hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=vision.tokens,
            pooler_output=self.project_image(vision).mean(dim=1),  # (B, D)
            hidden_states=vision.hidden_states,
            attentions=vision.attentions,
        )

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """
        Text features from the text tower alone: `pooler_output` is the mean projected token over the attention
        mask (B, D), `last_hidden_state` the tower's tokens (B, Nt, Dt).
        """
        output_attentions, output_hidden_states = self.output_flags(output_attentions, output_hidden_states)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if output_attentions or output_hidden_states:  # the frozen-tower cache keeps the last states only
            text = self.text_tower(input_ids, attention_mask, output_attentions, output_hidden_states)
        else:
            text = TowerOutput(self._encode_text(input_ids, attention_mask))
        return BaseModelOutputWithPooling(
            last_hidden_state=text.tokens,
            pooler_output=masked_mean(self.project_text(text.tokens), attention_mask),  # (B, D)
            hidden_states=text.hidden_states,
            attentions=text.attentions,
        )


__all__ = ["TowerFeaturesMixin", "masked_mean"]
