"""Tests for the caption metrics (BLEU, CIDEr-D, ROUGE-L): hand-computed cases, pycocoevalcap agreement, tokenizer."""

from __future__ import annotations

import math
import random

import pytest
from helpers_metrics import load_offline

from mmft.metrics import available_metrics
from mmft.metrics.caption_tokenize import tokenize_caption
from mmft.metrics.captioning import cider_d, corpus_bleu, prepare_captions, rouge_l


def split(predictions: list[str], references: list[list[str]]):
    return prepare_captions(predictions, references, tokenize=False)


# --- BLEU, by hand -------------------------------------------------------------------------------------------------
def test_bleu_clipping_and_tiny_smoothing() -> None:
    # candidate "a cat a cat" (4 words); references of 3 and 6 words -> closest length 3, no brevity penalty.
    # 1-grams: a x2, cat x2, each clipped to 1 (their largest count in one reference) -> 2/4
    # 2-grams: "a cat" x2 clipped to 1, "cat a" 0 -> 1/3;  3-grams 0/2;  4-grams 0/1
    scores = corpus_bleu(*split(["a cat a cat"], [["a cat sat", "the cat sat on a mat"]]))
    assert scores[0] == pytest.approx(1 / 2)
    assert scores[1] == pytest.approx(math.sqrt(1 / 2 * 1 / 3))
    # no 3-gram match: the precision is 1e-15 / 2, tiny but not zero (pycocoevalcap's smoothing):
    # BLEU-3 = (1/2 * 1/3 * 1e-15/2) ** (1/3) = (1e-15 / 12) ** (1/3) ~ 4.37e-6
    assert scores[2] == pytest.approx((1e-15 / 12) ** (1 / 3), rel=1e-6)
    assert 0 < scores[3] < scores[2]


def test_bleu_closest_reference_length_ties_go_to_the_shorter() -> None:
    # candidate of 4 words, references of 3 and 5 words: both 1 away, the shorter (3) is used -> no penalty.
    # 1-grams all in the 5-word reference -> 4/4; 2-grams "a dog", "dog runs" match, "runs fast" not -> 2/3.
    # Negative control: the longer reference would give a penalty exp(1 - 5/4) = 0.7788.
    scores = corpus_bleu(*split(["a dog runs fast"], [["a dog runs", "a dog runs very fast"]]))
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(math.sqrt(2 / 3))


def test_bleu_brevity_penalty() -> None:
    # candidate 2 words, closest (only) reference 5: precisions 1 and 1, penalty exp(1 - 5/2) = exp(-1.5)
    scores = corpus_bleu(*split(["a dog"], [["a dog runs on grass"]]))
    assert scores[:2] == pytest.approx([math.exp(-1.5)] * 2)


def test_bleu_is_corpus_level_not_a_mean_of_sentences() -> None:
    # sentence 1: 2/2 unigram matches, sentence 2: 0/4; lengths c = 2 + 4 = r -> no penalty.
    # corpus BLEU-1 = (2 + 0) / (2 + 4) = 1/3, whereas the mean of sentence BLEU-1 would be (1 + 0) / 2 = 1/2.
    scores = corpus_bleu(*split(["a b", "c d e f"], [["a b"], ["w x y z"]]))
    assert scores[0] == pytest.approx(1 / 3)


# --- CIDEr-D, by hand ----------------------------------------------------------------------------------------------
PENALTY_ONE_WORD = math.exp(-1 / 72)  # Gaussian length penalty for delta = 1: exp(-1^2 / (2 * 6^2))


def test_cider_cosines_and_length_penalty() -> None:
    # Two images with disjoint words, so every n-gram has df 1 and the same idf log 2; cosines reduce to counts.
    # Image A equals its reference (5 words): cosine 1 for n = 1..4 -> 10.
    # Image B "x y z w" vs "x y z w v": n=1 4/sqrt(4*5), n=2 3/sqrt(3*4), n=3 2/sqrt(2*3), n=4 1/sqrt(1*2),
    # delta = 3 - 4 bigrams = -1 -> times exp(-1/72); score = 10 * mean over n.
    mean, per_image = cider_d(*split(["a b c d e", "x y z w"], [["a b c d e"], ["x y z w v"]]))
    image_b = 10 * PENALTY_ONE_WORD * (4 / math.sqrt(20) + 3 / math.sqrt(12) + 2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4
    assert per_image == pytest.approx([10.0, image_b])
    assert mean == pytest.approx((10.0 + image_b) / 2)


def test_cider_clips_repeated_words() -> None:
    # Image B "x x x x": its x weight 4 log2 is clipped to the reference's log2 before the dot product, so
    # n=1 gives (1 * 1) / (4 * sqrt(5)) (without clipping: 4 / (4 * sqrt(5))); n = 2..4 have no match.
    _, per_image = cider_d(*split(["a b c d e", "x x x x"], [["a b c d e"], ["x y z w v"]]))
    assert per_image[1] == pytest.approx(10 * PENALTY_ONE_WORD * (1 / (4 * math.sqrt(5))) / 4)


def test_cider_document_frequency_comes_from_the_corpus() -> None:
    # One image: idf = log(1) - log(1) = 0 for every n-gram -> 0, even for a perfect caption.
    assert cider_d(*split(["a dog runs on grass"], [["a dog runs on grass"]]))[0] == 0.0
    # "a" is in the references of both images: idf log(2) - log(2) = 0, so candidates made of it score 0.
    assert cider_d(*split(["a", "a"], [["a b"], ["a c"]]))[0] == 0.0


# --- ROUGE-L, by hand ----------------------------------------------------------------------------------------------
def test_rouge_maximises_precision_and_recall_separately() -> None:
    # candidate "a b c d": vs "a b" LCS 2 -> P 2/4, R 2/2; vs "a b c d e f g h" LCS 4 -> P 4/4, R 4/8.
    # max P = 1 and max R = 1 -> F = 1. Negative control: the best per-reference F would be
    # 2.44 * 0.5 * 1 / (1 + 1.44 * 0.5) = 0.7093.
    assert rouge_l(*split(["a b c d"], [["a b", "a b c d e f g h"]]))[0] == pytest.approx(1.0)


def test_rouge_beta_and_gapped_lcs() -> None:
    # "a dog runs fast" vs "a dog runs": P 3/4, R 1 -> 2.44 * 0.75 / (1 + 1.44 * 0.75) = 1.83 / 2.08
    # (beta = 1 would give 1.5 / 1.75 = 0.857); "a x b y c" vs "a b c": LCS 3, P 3/5, R 1 -> 1.464 / 1.864
    mean, per_image = rouge_l(*split(["a dog runs fast", "a x b y c"], [["a dog runs"], ["a b c"]]))
    assert per_image == pytest.approx([1.83 / 2.08, 1.464 / 1.864])
    assert mean == pytest.approx((1.83 / 2.08 + 1.464 / 1.864) / 2)
    assert rouge_l(*split([""], [["a b"]]))[0] == 0.0  # empty candidate


# --- agreement with pycocoevalcap ----------------------------------------------------------------------------------
VOCAB = "a the dog cat man woman sits runs on in red blue ball grass with of".split()
OTHER_VOCAB = "zebra kite surf wave board snow".split()  # disjoint from VOCAB: no-overlap candidates


def random_caption(rng: random.Random, vocab: list[str], low: int = 1, high: int = 14) -> str:
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(low, high)))


def random_corpus(seed: int) -> tuple[list[str], list[list[str]]]:
    """A small corpus mixing random, exact-match, no-overlap, repeated-word, truncated and empty candidates."""
    rng = random.Random(seed)
    predictions, references = [], []
    for _ in range(rng.randint(1, 8)):
        refs = [random_caption(rng, VOCAB) for _ in range(rng.randint(1, 5))]
        kind = rng.choice(["random", "exact", "no_overlap", "repeated", "prefix", "random", "empty"])
        if kind == "empty":
            prediction = ""
        elif kind == "exact":
            prediction = rng.choice(refs)
        elif kind == "no_overlap":
            prediction = random_caption(rng, OTHER_VOCAB)
        elif kind == "repeated":
            prediction = " ".join([rng.choice(VOCAB)] * rng.randint(1, 6))
        elif kind == "prefix":  # shares a run of words with a reference but is shorter: brevity penalty
            words = rng.choice(refs).split()
            prediction = " ".join(words[: max(1, len(words) // 2)])
        else:
            prediction = random_caption(rng, VOCAB)
        predictions.append(prediction)
        references.append(refs)
    return predictions, references


NUM_CASES = 40


@pytest.mark.parametrize("seed", range(NUM_CASES))
def test_agreement_with_pycocoevalcap(seed: int) -> None:
    bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    rouge = pytest.importorskip("pycocoevalcap.rouge.rouge")
    predictions, references = random_corpus(seed)
    res = {i: [p] for i, p in enumerate(predictions)}
    gts = dict(enumerate(references))
    theirs_bleu, _ = bleu.Bleu(4).compute_score(gts, res, verbose=0)
    theirs_cider, theirs_cider_images = cider.Cider().compute_score(gts, res)
    theirs_rouge, theirs_rouge_images = rouge.Rouge().compute_score(gts, res)

    tokens = split(predictions, references)
    ours_cider, ours_cider_images = cider_d(*tokens)
    ours_rouge, ours_rouge_images = rouge_l(*tokens)
    assert corpus_bleu(*tokens) == pytest.approx(theirs_bleu, abs=1e-4)
    assert ours_cider == pytest.approx(theirs_cider, abs=1e-4)
    assert ours_cider_images == pytest.approx(list(theirs_cider_images), abs=1e-4)
    assert ours_rouge == pytest.approx(theirs_rouge, abs=1e-4)
    assert ours_rouge_images == pytest.approx(list(theirs_rouge_images), abs=1e-4)


def test_generated_cases_cover_the_conventions() -> None:
    # The agreement cases must actually exercise what they are meant to: several references, one-image corpora
    # (CIDEr 0), exact matches, empty candidates and candidates sharing no word with their references.
    corpora = [random_corpus(seed) for seed in range(NUM_CASES)]
    assert any(len(refs) == 5 for _, references in corpora for refs in references)
    assert any(len(predictions) == 1 for predictions, _ in corpora)
    assert any(p in refs for predictions, references in corpora for p, refs in zip(predictions, references))
    assert any(p and set(p.split()) <= set(OTHER_VOCAB) for predictions, _ in corpora for p in predictions)
    assert any(p == "" for predictions, _ in corpora for p in predictions)


# --- tokenization --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A man, riding a horse.", "a man riding a horse"),  # lowercase, . and , removed
        ("The dog's ball isn't red!", "the dog 's ball is n't red"),  # PTB clitic splits
        ("I can't; I cannot.", "i ca n't i can not"),
        ('"Hello" (she) said -- ok...', "hello she said ok"),  # quotes, brackets, dashes, ellipsis
        ("A t-shirt costs $3.50 or 1,000 yen", "a t-shirt costs $ 3.50 or 1,000 yen"),  # kept joins, $ a token
        ("Two  people\tat\n5% off", "two people at 5 % off"),
        ("it\u2019s a \u201cdog\u201d", "it 's a dog"),  # curly quotes
    ],
)
def test_tokenize_caption(raw: str, expected: str) -> None:
    assert tokenize_caption(raw) == expected
    assert tokenize_caption(expected) == expected  # pre-tokenized text is left alone


# --- evaluate modules ----------------------------------------------------------------------------------------------
def test_metrics_are_listed() -> None:
    assert {"bleu", "cider", "rouge"} <= set(available_metrics())


def test_evaluate_bleu_tokenizes_raw_text() -> None:
    bleu = load_offline("bleu")
    raw = bleu.compute(predictions=["A dog's ball, on grass."], references=[["a dog 's ball on the grass"]])
    tokenized = bleu.compute(predictions=["a dog 's ball on grass"], references=[["a dog 's ball on the grass"]])
    assert raw == tokenized
    assert set(raw) == {"bleu", "bleu_1", "bleu_2", "bleu_3", "bleu_4"} and raw["bleu"] == raw["bleu_4"]
    # tokenize=False: "grass." stays one token and no longer matches "grass"
    untouched = bleu.compute(
        predictions=["a dog 's ball on grass."], references=[["a dog 's ball on the grass"]], tokenize=False
    )
    assert untouched["bleu_1"] < raw["bleu_1"]


def test_evaluate_cider_and_rouge_docstring_examples() -> None:
    cider = load_offline("cider")
    got = cider.compute(
        predictions=["a dog runs on grass", "a cat sleeps on a bed"],
        references=[["a dog runs on grass"], ["a cat sleeps on a bed"]],
    )
    assert got == {"cider": pytest.approx(10.0)}
    rouge = load_offline("rouge")
    assert rouge.compute(predictions=["a dog runs fast"], references=[["a dog runs"]]) == {
        "rougeL": pytest.approx(1.83 / 2.08)
    }


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="at least one reference"):
        prepare_captions(["a"], [[]])
    with pytest.raises(TypeError, match="not a string"):
        prepare_captions(["a"], ["a dog"])
    with pytest.raises(ValueError, match="no predictions"):
        prepare_captions([], [])
