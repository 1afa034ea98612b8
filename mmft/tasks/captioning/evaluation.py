"""Caption evaluation: generate a caption for every eval image and score it, beside two baselines from the same run.

Scores are the COCO caption metrics shipped with mmft (`bleu` -> BLEU-1..4, `cider` -> CIDEr-D, `rouge` -> ROUGE-L,
local `evaluate` modules). The baselines need no decoder:

- **frequent**: the most frequent training caption (after caption tokenization), given for every image;
- **nearest**: the caption of the training image nearest to the eval image by the trained vision tower's embedding
  (`get_image_features(...).pooler_output`: the mean projected image token, no bridge; cosine similarity), from the
  one embedding path retrieval and `mmft search` use too (`mmft.inference.embeddings`). Of that
  training image's captions it takes the *consensus* one: the caption with the highest CIDEr-D against the image's
  other captions.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ...data.collator import ImageTextTransform
from ...inference.embeddings import embed_images, image_embedding, pixel_batches
from ...metrics import load_metric
from ...metrics.caption_tokenize import tokenize_caption
from ...metrics.captioning import cider_d, prepare_captions

SIMILARITY_CHUNK = 1024  # eval images compared with every training image at a time


def caption_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]], suffix: str = ""
) -> dict[str, float]:
    """BLEU-1..4, CIDEr-D and ROUGE-L of `predictions`; `suffix` is appended to every key (e.g. `_baseline_nearest`)."""
    bleu = load_metric("bleu").compute(predictions=list(predictions), references=[list(r) for r in references])
    cider = load_metric("cider").compute(predictions=list(predictions), references=[list(r) for r in references])
    rouge = load_metric("rouge").compute(predictions=list(predictions), references=[list(r) for r in references])
    scores = {f"bleu_{n}": bleu[f"bleu_{n}"] for n in range(1, 5)}
    scores.update(cider=cider["cider"], rouge_l=rouge["rougeL"])
    return {f"{key}{suffix}": float(value) for key, value in scores.items()}


def most_frequent_caption(captions: Sequence[Sequence[str]]) -> str:
    """The training caption that occurs most often once tokenized (ties: the first seen), as first written."""
    counts: Counter = Counter()
    written: dict[str, str] = {}
    for group in captions:
        for caption in group:
            key = tokenize_caption(caption)
            counts[key] += 1
            written.setdefault(key, caption)
    return written[counts.most_common(1)[0][0]]


def consensus_captions(groups: Sequence[Sequence[str]]) -> list[str]:
    """Per image, the caption with the highest CIDEr-D against the image's other captions (the only one if alone)."""
    candidates, references, owners = [], [], []
    for owner, group in enumerate(groups):
        for index, caption in enumerate(group):
            others = [c for i, c in enumerate(group) if i != index]
            if others:
                candidates.append(caption)
                references.append(others)
                owners.append((owner, index))
    best = {owner: (-1.0, group[0]) for owner, group in enumerate(groups)}
    if candidates:
        _, per_caption = cider_d(*prepare_captions(candidates, references))
        for (owner, index), score in zip(owners, per_caption):
            if score > best[owner][0]:
                best[owner] = (score, groups[owner][index])
    return [best[owner][1] for owner in range(len(groups))]


@dataclass
class Generated:
    """What one pass over the eval images produced."""

    captions: list[str]
    features: torch.Tensor  # (N, D) vision-tower embeddings of the eval images (L2-normalised)
    seconds: float  # generate() time only
    new_tokens: int  # tokens generated (up to and including each caption's end token)


@torch.no_grad()
def generate_captions(
    model, processor, dataset, batch_size: int, generate_kwargs: dict[str, Any], device: torch.device
) -> Generated:
    """Greedy (or whatever `generate_kwargs` ask) captions of `dataset`'s images (a transform gives pixel_values),
    in batches, plus each image's vision embedding for the nearest-neighbour baseline."""
    model.eval()
    eos = processor.caption_token_ids()["eos"]
    captions, features, seconds, new_tokens = [], [], 0.0, 0
    for pixel_values in pixel_batches(dataset, batch_size):
        pixel_values = pixel_values.to(device)
        inputs = {**processor.prompt_features(len(pixel_values)), **processor.start_features(len(pixel_values))}
        inputs = {key: value.to(device) for key, value in inputs.items()}
        start = time.perf_counter()
        sequences = model.generate(pixel_values=pixel_values, **inputs, **generate_kwargs)  # (B, 1 + new)
        seconds += time.perf_counter() - start
        for row in sequences[:, 1:].tolist():
            new_tokens += row.index(eos) + 1 if eos in row else len(row)
        captions += processor.decode_captions(sequences)
        features.append(image_embedding(model, pixel_values)[1].float().cpu())
    return Generated(captions, torch.cat(features) if features else torch.empty(0), seconds, new_tokens)


def image_features(model, image_processor, dataset, batch_size: int, device: torch.device) -> torch.Tensor:
    """Vision-tower embeddings (N, D), L2-normalised, of a dataset's images (undecoded `image` column)."""
    model.eval()
    images = dataset.with_transform(ImageTextTransform(image_processor, None, None, "eval", None))
    return embed_images(model, pixel_batches(images, batch_size), device).embeds


def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Index of the most cosine-similar row of `keys` (N, D) for each row of `queries` (M, D), chunked: (M,)."""
    keys = F.normalize(keys, dim=-1)
    found = [(F.normalize(chunk, dim=-1) @ keys.T).argmax(dim=-1) for chunk in queries.split(SIMILARITY_CHUNK)]
    return torch.cat(found)


def baseline_scores(
    references: list[list[str]],
    train_captions: list[list[str]],
    eval_features: torch.Tensor,
    train_features: torch.Tensor,
) -> tuple[dict[str, float], dict[str, list[str]]]:
    """The two baselines' scores (keys `<metric>_baseline_frequent` / `_baseline_nearest`) and their captions."""
    frequent = [most_frequent_caption(train_captions)] * len(references)
    neighbours = nearest_neighbours(eval_features, train_features).tolist()
    used = sorted(set(neighbours))
    consensus = dict(zip(used, consensus_captions([train_captions[i] for i in used])))
    nearest = [consensus[i] for i in neighbours]
    scores = {
        **caption_scores(frequent, references, "_baseline_frequent"),
        **caption_scores(nearest, references, "_baseline_nearest"),
    }
    return scores, {"frequent": frequent, "nearest": nearest}


__all__ = [
    "Generated",
    "baseline_scores",
    "caption_scores",
    "consensus_captions",
    "generate_captions",
    "image_features",
    "most_frequent_caption",
    "nearest_neighbours",
]
