"""Caption metrics as the COCO caption evaluation (pycocoevalcap 1.2) computes them: BLEU-1..4, CIDEr-D, ROUGE-L.

Written from the published formulas and pycocoevalcap's documented conventions, in plain Python. Inputs are
tokenized captions (lists of tokens); :func:`prepare_captions` tokenizes raw strings with
:func:`mmft.metrics.caption_tokenize.tokenize_caption`. The `evaluate` scripts in `bleu/`, `cider/` and `rouge/`
only call this module. On the same tokens the scores equal pycocoevalcap's (the tests check it to 1e-4).

Conventions of pycocoevalcap that are kept on purpose, because published COCO numbers use them:

* BLEU is corpus-level: n-gram matches (clipped by the largest count in any one reference) and candidate n-gram
  counts are summed over the corpus; BLEU-n is the geometric mean of the modified precisions 1..n. Each
  precision is (matches + 1e-15) / (total + 1e-9), so a zero count gives a tiny number, not a log(0). The
  reference length of a sentence is that of the "closest" reference (ties go to the shorter one), and the brevity
  penalty exp(1 - r/c) uses the same tiny/small constants: ratio = (c + 1e-15) / (r + 1e-9), applied when < 1.
* CIDEr-D: TF-IDF vectors of 1..4-grams, document frequency = number of images whose references contain the
  n-gram (taken from the evaluated corpus itself), idf = log(#images) - log(max(1, df)); per n the similarity is
  sum(min(cand, ref) * ref) / (|cand| |ref|) (the "clipping"), times a Gaussian length penalty
  exp(-delta^2 / (2 * 6^2)); averaged over n = 1..4 and over references, times 10, then over images. delta is
  the difference in word counts (pycocoevalcap counts bigrams, which gives the same difference whenever both
  captions have a word; when one has none its similarity is 0 anyway).
* ROUGE-L: the best LCS precision and the best LCS recall over references (each maximised on its own), combined
  as F = (1 + b^2) P R / (R + b^2 P) with b = 1.2; the mean over images. An empty candidate scores 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from mmft.metrics.caption_tokenize import tokenize_caption

__all__ = ["cider_d", "corpus_bleu", "prepare_captions", "rouge_l"]

Tokens = Sequence[str]
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's smoothing constants (numerator, denominator)


def prepare_captions(
    predictions: Sequence[str], references: Sequence[Sequence[str]], tokenize: bool = True
) -> tuple[list[list[str]], list[list[list[str]]]]:
    """Check the inputs and split them into tokens (after :func:`tokenize_caption` when `tokenize`)."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError("no predictions to score")
    split = (lambda text: tokenize_caption(text).split()) if tokenize else str.split
    candidates, refs = [], []
    for prediction, captions in zip(predictions, references):
        if isinstance(captions, str):  # a bare string would be read as one reference per character
            raise TypeError("each entry of references must be a list of reference captions, not a string")
        if len(captions) == 0:
            raise ValueError("every prediction needs at least one reference caption")
        candidates.append(split(prediction))
        refs.append([split(caption) for caption in captions])
    return candidates, refs


def _ngrams(tokens: Tokens, max_n: int) -> Counter:
    """Counts of every n-gram (as a tuple) of length 1..max_n."""
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))


# -- BLEU ----------------------------------------------------------------------------------------------------------
def _closest_length(candidate_length: int, reference_lengths: list[int]) -> int:
    return min(reference_lengths, key=lambda length: (abs(length - candidate_length), length))


def corpus_bleu(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], max_n: int = 4) -> list[float]:
    """Corpus BLEU-1 .. BLEU-`max_n` (pycocoevalcap conventions, see the module docstring)."""
    matches, totals = [0] * max_n, [0] * max_n
    candidate_length = reference_length = 0
    for candidate, refs in zip(candidates, references):
        counts = _ngrams(candidate, max_n)
        best_ref_counts: Counter = Counter()
        for ref in refs:
            best_ref_counts |= _ngrams(ref, max_n)  # | keeps the larger count: clip by the best single reference
        for ngram, count in counts.items():
            matches[len(ngram) - 1] += min(count, best_ref_counts[ngram])
        for n in range(max_n):
            totals[n] += max(0, len(candidate) - n)
        candidate_length += len(candidate)
        reference_length += _closest_length(len(candidate), [len(ref) for ref in refs])

    ratio = (candidate_length + _TINY) / (reference_length + _SMALL)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = [], 1.0
    for n in range(max_n):
        product *= (matches[n] + _TINY) / (totals[n] + _SMALL)
        scores.append(product ** (1 / (n + 1)) * brevity)
    return scores


# -- CIDEr-D -------------------------------------------------------------------------------------------------------
def _tfidf(counts: Counter, document_frequency: Counter, log_images: float, n: int) -> list[dict]:
    """Per n-gram length, the TF-IDF weight of each n-gram of `counts`."""
    vectors: list[dict] = [{} for _ in range(n)]
    for ngram, count in counts.items():
        vectors[len(ngram) - 1][ngram] = count * (log_images - math.log(max(1.0, document_frequency[ngram])))
    return vectors


def _norm(vector: dict) -> float:
    return math.sqrt(sum(weight * weight for weight in vector.values()))


def _cider_similarity(cand: list[dict], ref: list[dict], delta: int, sigma: float) -> float:
    """Mean over n of the clipped cosine similarity with the Gaussian length penalty."""
    penalty = math.exp(-(delta**2) / (2 * sigma**2))
    total = 0.0
    for cand_n, ref_n in zip(cand, ref):
        dot = sum(min(weight, ref_n.get(ngram, 0.0)) * ref_n.get(ngram, 0.0) for ngram, weight in cand_n.items())
        norms = _norm(cand_n) * _norm(ref_n)
        total += (dot / norms if norms else dot) * penalty
    return total / len(cand)


def cider_d(
    candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and the score of each image (pycocoevalcap conventions, see the module docstring)."""
    ref_counts = [[_ngrams(ref, n) for ref in refs] for refs in references]
    document_frequency: Counter = Counter()
    for counts in ref_counts:
        document_frequency.update(set().union(*counts))  # an n-gram counts once per image
    log_images = math.log(len(references))
    scores = []
    for candidate, refs, counts in zip(candidates, references, ref_counts):
        cand_vec = _tfidf(_ngrams(candidate, n), document_frequency, log_images, n)
        similarity = sum(
            _cider_similarity(
                cand_vec, _tfidf(ref, document_frequency, log_images, n), len(candidate) - len(tokens), sigma
            )
            for ref, tokens in zip(counts, refs)
        )
        scores.append(10.0 * similarity / len(refs))
    return sum(scores) / len(scores), scores


# -- ROUGE-L -------------------------------------------------------------------------------------------------------
def _lcs_length(a: Tokens, b: Tokens) -> int:
    """Length of the longest common subsequence, dynamic programming over one row."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for token in a:
        diagonal = 0  # row[j - 1] of the previous row
        for j, other in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if token == other else max(above, row[j - 1])
            diagonal = above
    return row[-1]


def _rouge_l_sentence(candidate: Tokens, refs: Sequence[Tokens], beta: float) -> float:
    if not candidate:
        return 0.0
    lcs = [_lcs_length(candidate, ref) for ref in refs]
    precision = max(common / len(candidate) for common in lcs)
    recall = max(common / len(ref) if ref else 0.0 for common, ref in zip(lcs, refs))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(
    candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]], beta: float = 1.2
) -> tuple[float, list[float]]:
    """Mean ROUGE-L F-measure over images, and the score of each image."""
    scores = [_rouge_l_sentence(candidate, refs, beta) for candidate, refs in zip(candidates, references)]
    return sum(scores) / len(scores), scores
