"""Training losses of the retrieval model over a batch gathered from every process: InfoNCE and hard-negative ITM.

Two processes with batch B must train like one process with batch 2B. Three things make that hold:

- every process contrasts its own rows against the *gathered* batch, and the gather keeps gradients
  (`torch.distributed.nn.functional.all_gather`, whose backward sums each slice's gradients back to its owner);
- a process's loss is its rows' summed loss divided by (global count / world size), so the mean over processes that
  the Trainer logs, and the gradient average DDP takes, are the global per-example mean;
- hard negatives are drawn from the gathered batch with random numbers that every process, and every layout of the
  same global batch, shares (seeded by the batch's image ids), so the draw is deterministic.

Rows are (image, caption) pairs; two rows with the same `image_ids` are never each other's negatives (two captions
of one image, or one image drawn twice).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `tensor` concatenated along dim 0, in rank order, with gradients flowing back to each owner."""
    if world()[1] == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def global_max(value: int, device: torch.device) -> int:
    """The largest `value` over all processes (e.g. the padded text length every process must share)."""
    if world()[1] == 1:
        return value
    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


@dataclass
class PairBatch:
    """One side of the loss: per-pair embeddings, ids and token states, either local or gathered."""

    image_embeds: torch.Tensor  # (N, P), L2-normalised
    text_embeds: torch.Tensor  # (N, P), L2-normalised
    image_ids: torch.Tensor  # (N,)
    image_states: torch.Tensor  # (N, Nv, D)
    text_states: torch.Tensor  # (N, Nt, D)
    text_mask: torch.Tensor  # (N, Nt)

    def __len__(self) -> int:
        return len(self.image_ids)


def pad_text(batch: PairBatch, length: int) -> PairBatch:
    """The batch with its text states and mask right-padded with zeros to `length` tokens."""
    extra = length - batch.text_states.shape[1]
    if extra == 0:
        return batch
    return PairBatch(
        batch.image_embeds,
        batch.text_embeds,
        batch.image_ids,
        batch.image_states,
        F.pad(batch.text_states, (0, 0, 0, extra)),
        F.pad(batch.text_mask, (0, extra)),
    )


def gather_pairs(local: PairBatch, gather: bool) -> tuple[PairBatch, PairBatch, int]:
    """(local padded to the shared text length, the gathered batch, offset of the local rows in it).

    With `gather=False` every process keeps to its own batch (a cheaper "local loss", not equal to one process).
    """
    if not gather or world()[1] == 1:
        return local, local, 0
    local = pad_text(local, global_max(local.text_states.shape[1], local.text_states.device))
    rank = world()[0]
    gathered = PairBatch(
        gather_with_grad(local.image_embeds),
        gather_with_grad(local.text_embeds),
        gather_with_grad(local.image_ids),
        gather_with_grad(local.image_states),
        gather_with_grad(local.text_states),
        gather_with_grad(local.text_mask),
    )
    return local, gathered, rank * len(local)


def contrastive_loss(
    local: PairBatch, gathered: PairBatch, offset: int, scale: torch.Tensor, world_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE of the local rows against the gathered batch (CLIP), same-image columns masked out.

    Returns (loss, text->image logits (B, N), image->text logits (B, N)); the logits keep their masking, so a
    masked column holds -inf.
    """
    own = torch.arange(offset, offset + len(local), device=local.image_ids.device)  # (B,) global positions
    other_caption = local.image_ids[:, None] == gathered.image_ids[None, :]  # (B, N) same image ...
    other_caption[torch.arange(len(local)), own] = False  # ... except the row's own pair
    logits_t2i = (scale * local.text_embeds @ gathered.image_embeds.T).masked_fill(other_caption, -torch.inf)
    logits_i2t = (scale * local.image_embeds @ gathered.text_embeds.T).masked_fill(other_caption, -torch.inf)
    summed = F.cross_entropy(logits_t2i, own, reduction="sum") + F.cross_entropy(logits_i2t, own, reduction="sum")
    per_process = len(gathered) / world_size  # B on every process when batches are equal
    return summed / 2 / per_process, logits_t2i, logits_i2t


def batch_uniforms(image_ids: torch.Tensor) -> torch.Tensor:
    """One uniform draw in [0, 1) per gathered row, seeded by the gathered ids: the same numbers on every process
    and in every layout of the same global batch (1 x 2B or 2 x B), and again when a run is resumed."""
    seed = int.from_bytes(hashlib.sha256(image_ids.cpu().numpy().tobytes()).digest()[:8], "little") % 2**63
    return torch.rand(len(image_ids), generator=torch.Generator().manual_seed(seed)).to(image_ids.device)


def mine_negatives(logits: torch.Tensor, offset: int, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a hard negative column per local row (B,), whether the row has one (B,)) from masked logits (B, N).

    As ALBEF, a negative is drawn with probability softmax(logits) over the row's negatives, so similar items are
    drawn most often but not always the same one (the single hardest, every step, teaches the matching head only
    those pairs). The draw inverts each row's CDF at `uniforms[offset + row]` (`batch_uniforms`), so it is
    deterministic and does not depend on how the batch is split across processes.
    """
    scores = logits.detach().float().clone()  # (B, N): -inf on every column of the row's own image
    rows = torch.arange(len(scores), device=scores.device)
    scores[rows, rows + offset] = -torch.inf  # the row's own pair is the positive, never a negative
    exists = scores.amax(dim=1).isfinite()
    cdf = scores.masked_fill(~exists[:, None], 0.0).softmax(dim=1).cumsum(dim=1)  # (B, N)
    cdf = cdf / cdf[:, -1:]  # the last entry exactly 1, so every draw < 1 lands on a column
    draws = uniforms[offset : offset + len(scores), None].to(cdf.dtype)
    return torch.searchsorted(cdf, draws, right=True).squeeze(1).clamp(max=scores.shape[1] - 1), exists


def negatives_available(image_ids: torch.Tensor) -> torch.Tensor:
    """(N,) whether each gathered row has some row of another image (so it can have a negative)."""
    return (image_ids[:, None] != image_ids[None, :]).any(dim=1)


def matching_examples(
    local: PairBatch, gathered: PairBatch, offset: int, logits_t2i: torch.Tensor, logits_i2t: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The image-text matching batch of the local rows (ALBEF): B positives, each image with a hard negative
    caption, each caption with a hard negative image, all drawn from the gathered batch (`mine_negatives`).

    Returns (image_states (3B, Nv, D), text_states (3B, Nt, D), text_mask (3B, Nt), targets (3B,), weights (3B,));
    a weight is 0 for a negative that does not exist (a batch of one image).
    """
    uniforms = batch_uniforms(gathered.image_ids)  # (N,), shared by every process
    negative_text, has_text = mine_negatives(logits_i2t, offset, uniforms)  # (B,) for each local image
    negative_image, has_image = mine_negatives(logits_t2i, offset, uniforms.flip(0))  # (B,) for each local caption
    image_states = torch.cat([local.image_states, local.image_states, gathered.image_states[negative_image]])
    text_states = torch.cat([local.text_states, gathered.text_states[negative_text], local.text_states])
    text_mask = torch.cat([local.text_mask, gathered.text_mask[negative_text], local.text_mask])
    batch = len(local)
    targets = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).to(local.image_ids.device, torch.long)
    weights = torch.cat([torch.ones(batch, device=has_text.device), has_text.float(), has_image.float()])
    return image_states, text_states, text_mask, targets, weights


def matching_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, gathered_ids: torch.Tensor, world_size: int
) -> torch.Tensor:
    """Cross-entropy of the matching logits (3B, 2), averaged over every example of the gathered batch."""
    examples = len(gathered_ids) + 2 * int(negatives_available(gathered_ids).sum())  # positives + real negatives
    summed = (F.cross_entropy(logits, targets, reduction="none") * weights).sum()
    return summed / (examples / world_size)


__all__ = [
    "PairBatch",
    "batch_uniforms",
    "contrastive_loss",
    "gather_pairs",
    "gather_with_grad",
    "global_max",
    "matching_examples",
    "matching_loss",
    "mine_negatives",
    "negatives_available",
    "pad_text",
    "world",
]
