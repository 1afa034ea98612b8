"""One embedding path: images and texts to L2-normalised embeddings, batched, without gradients, on a device.

Retrieval evaluation, `mmft search` and captioning's nearest-image baseline all embed here. An image's embedding is
its model's `get_image_features(...).pooler_output`, normalised: computed from the projected image tokens
(`core.image_states`), pooled by the model's `image_embedding` (a retrieval model's projection into the shared space)
or, for a model without one, their mean (the captioning model's vision embedding); likewise a text's from
`core.text_states` by `text_embedding`. Going through the token states lets retrieval evaluation keep them
(`keep_states`) for the matching head to re-rank with, at no second tower pass. Texts are batched by length (less
padding) and returned in their given order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..features import masked_mean


class TokenBank:
    """Token states of many items, stored in the batches they were computed in (each padded to its own longest row),
    so a gallery costs no padding to a global length; `take(indices)` returns rows padded to their own longest.
    Items are numbered 0..N-1 and may be added in any order."""

    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []  # per batch (b, L_b, D)
        self.masks: list[torch.Tensor] = []  # per batch (b, L_b)
        self._places: list[tuple[int, int, int, int]] = []  # (item, batch, row, length)
        self._index: np.ndarray | None = None  # (N, 3): batch, row, length of each item

    def add(self, items: Sequence[int], states: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        batch = len(self.states)
        mask = mask if mask is not None else torch.ones(states.shape[:2], dtype=torch.long)
        self.states.append(states.detach().float().cpu())
        self.masks.append(mask.detach().cpu())
        lengths = mask.sum(dim=1).tolist()
        self._places.extend((int(item), batch, row, int(lengths[row])) for row, item in enumerate(items))
        self._index = None

    def _lookup(self) -> np.ndarray:
        if self._index is None:
            places = np.array(sorted(self._places), dtype=np.int64)  # items are 0..N-1, so row i is item i
            self._index = places[:, 1:]
        return self._index

    def select(self, items: Sequence[int]) -> TokenBank:
        """A bank of the given items only, renumbered 0..len(items)-1 (the stored batches are shared, not copied)."""
        index = self._lookup()
        bank = TokenBank()
        bank.states, bank.masks = self.states, self.masks
        bank._places = [(new, *map(int, index[old])) for new, old in enumerate(items)]
        return bank

    def take(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (n, L, D), mask (n, L)) of the items, L the longest of them."""
        batch, row, length = self._lookup()[np.asarray(indices, dtype=np.int64)].T
        longest, width = int(length.max()), self.states[0].shape[-1]
        states = torch.zeros(len(batch), longest, width)
        mask = torch.zeros(len(batch), longest, dtype=torch.long)
        for b in np.unique(batch):
            out = torch.as_tensor(np.nonzero(batch == b)[0])
            rows = torch.as_tensor(row[out.numpy()])
            keep = min(longest, self.states[b].shape[1])  # every real token of these rows lies within both
            states[out, :keep] = self.states[b][rows, :keep]
            mask[out, :keep] = self.masks[b][rows, :keep]
        return states, mask


@dataclass
class Embedded:
    """L2-normalised embeddings (N, P) and, when kept, the token states the matching head reads (one side of a
    retrieval gallery)."""

    embeds: torch.Tensor
    bank: TokenBank | None = None

    def subset(self, items: Sequence[int]) -> Embedded:
        return Embedded(self.embeds[list(items)], self.bank.select(items) if self.bank is not None else None)


def pixel_batches(dataset, batch_size: int, workers: int = 0) -> Iterator[torch.Tensor]:
    """Stacked `pixel_values` (B, 3, H, W) of a dataset's rows in order (rows under the task's transform)."""
    yield from DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=lambda rows: torch.stack([row["pixel_values"] for row in rows]),
    )


def image_embedding(model, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(projected image tokens (B, Nv, D), L2-normalised embeddings (B, P)) of one batch of pixels."""
    states, _ = model.core.image_states(pixel_values)
    pooled = model.image_embedding(states) if hasattr(model, "image_embedding") else states.mean(dim=1)
    return states, F.normalize(pooled, dim=-1)


def text_embedding(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(projected text tokens (B, Nt, D), L2-normalised embeddings (B, P)) of one batch of token ids."""
    states = model.core.text_states(input_ids, attention_mask)
    if hasattr(model, "text_embedding"):
        pooled = model.text_embedding(states, attention_mask)
    else:
        pooled = masked_mean(states, attention_mask)
    return states, F.normalize(pooled, dim=-1)


@torch.no_grad()
def embed_images(
    model, batches: Iterable[torch.Tensor], device: torch.device | str, keep_states: bool = False
) -> Embedded:
    """Embeddings of the images of `batches` (pixels, e.g. `pixel_batches(dataset, ...)`) in order; with
    `keep_states`, their token states too."""
    embeds, bank, done = [], TokenBank() if keep_states else None, 0
    for pixels in batches:
        states, batch = image_embedding(model, pixels.to(device))
        embeds.append(batch.float().cpu())
        if bank is not None:
            bank.add(range(done, done + len(pixels)), states)
        done += len(pixels)
    return Embedded(torch.cat(embeds) if embeds else torch.empty(0), bank)


@torch.no_grad()
def embed_texts(
    model,
    texts: Sequence[str],
    tokenize: Callable[[list[str]], dict[str, torch.Tensor]],
    batch_size: int,
    device: torch.device | str,
    keep_states: bool = False,
) -> Embedded:
    """Embeddings of `texts` in order (`tokenize(texts)` gives `input_ids` and `attention_mask`), batched by length;
    with `keep_states`, their token states too."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    embeds, bank = torch.empty(0), TokenBank() if keep_states else None
    for start in range(0, len(order), batch_size):
        items = order[start : start + batch_size]
        encoded = tokenize([texts[i] for i in items])
        ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
        states, batch = text_embedding(model, ids, mask)
        if embeds.numel() == 0:
            embeds = torch.empty(len(texts), batch.shape[1])
        embeds[items] = batch.float().cpu()
        if bank is not None:
            bank.add(items, states, mask)
    return Embedded(embeds, bank)


__all__ = [
    "Embedded",
    "TokenBank",
    "embed_images",
    "embed_texts",
    "image_embedding",
    "pixel_batches",
    "text_embedding",
]
