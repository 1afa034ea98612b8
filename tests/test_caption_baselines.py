"""The two caption baselines the captioning run reports beside its own scores (README's comparison table):
the most frequent training caption, and the consensus caption of the nearest training image by the vision tower's
embedding. Each is checked on a tiny case whose right answer is known by construction."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from datasets import Dataset, Features
from datasets import Image as ImageFeature
from helpers_captioning import tiny_caption_model, tiny_caption_processor
from PIL import Image

from mmft.tasks.captioning import evaluation as caption_evaluation
from mmft.tasks.captioning.evaluation import baseline_scores, caption_scores, image_features, most_frequent_caption

# Four training images, each with captions whose baseline answer is fixed by construction:
# 0 and 1: an unrelated caption first, then one caption written twice; that caption agrees with the image's other
#          captions and the first one shares no word with them, so it is the consensus (the first-caption fallback
#          would be wrong);
# 2: a single caption, the consensus as it stands;
# 3: one caption written three ways that tokenize alike, the most frequent training caption (3 against 2 for the
#    repeated captions of 0 and 1), returned as first written.
TRAIN_CAPTIONS = [
    ["two dogs run", "a red square in the top left corner", "a red square in the top left corner"],
    ["birds over water", "a blue square at the bottom right", "a blue square at the bottom right"],
    ["a green picture with nothing else"],
    ["A striped picture.", "a striped picture", "A STRIPED picture!"],
]
CONSENSUS = [
    "a red square in the top left corner",
    "a blue square at the bottom right",
    "a green picture with nothing else",
]  # of training images 0, 1 and 2
COPIED = [2, 0, 1]  # eval image k is an exact copy of training image COPIED[k]


def _images() -> list[np.ndarray]:
    """Four 32 px images unlike each other: a red square top left, a blue square bottom right, green, stripes."""
    red, blue = np.full((32, 32, 3), 255, np.uint8), np.full((32, 32, 3), 255, np.uint8)
    red[2:14, 2:14], blue[18:30, 18:30] = (255, 0, 0), (0, 0, 255)
    green, stripes = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)
    green[..., 1], stripes[::4] = 200, 255
    return [red, blue, green, stripes]


def _dataset(arrays: list[np.ndarray]) -> Dataset:
    """Undecoded PNG images, as the captioning task hands its training images to `image_features`."""
    encoded = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    return Dataset.from_dict({"image": encoded}, features=Features({"image": ImageFeature(decode=False)}))


def test_most_frequent_caption_counts_tokenized_captions_and_returns_the_first_writing():
    groups = [["a dog on grass", "A cat."], ["a cat", "a dog on grass"], ["A CAT!", "a bird"]]
    # "a cat" three times once tokenized (three writings), "a dog on grass" twice verbatim: counting the raw
    # strings would pick the dog.
    assert most_frequent_caption(groups) == "A cat."
    assert most_frequent_caption([["b c", "a b"], ["a b", "b c"]]) == "b c"  # a tie goes to the first seen


def test_baselines_give_the_most_frequent_caption_and_the_copied_training_images_consensus(monkeypatch):
    monkeypatch.setattr(caption_evaluation, "SIMILARITY_CHUNK", 2)  # 3 eval images: the chunked path, 2 then 1
    model, image_processor = tiny_caption_model(), tiny_caption_processor().image_processor
    images = _images()
    train = image_features(model, image_processor, _dataset(images), 2, torch.device("cpu"))
    evaluation = image_features(
        model, image_processor, _dataset([images[i].copy() for i in COPIED]), 2, torch.device("cpu")
    )
    references = [[CONSENSUS[i], "something else entirely"] for i in COPIED]
    scores, captions = baseline_scores(references, TRAIN_CAPTIONS, evaluation, train)
    assert captions["frequent"] == ["A striped picture."] * len(COPIED)
    assert captions["nearest"] == [CONSENSUS[i] for i in COPIED]
    # The scores are those of these captions against the same references, under each baseline's suffix; the
    # nearest captions are among their references, so they score BLEU-4 1.
    assert scores == {
        **caption_scores(captions["frequent"], references, "_baseline_frequent"),
        **caption_scores(captions["nearest"], references, "_baseline_nearest"),
    }
    assert scores["bleu_4_baseline_nearest"] == pytest.approx(1.0)
    assert scores["cider_baseline_nearest"] > scores["cider_baseline_frequent"]
