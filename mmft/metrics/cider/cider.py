"""CIDEr-D as the COCO caption evaluation computes it, as an offline ``evaluate`` metric."""

# `evaluate.load` copies this file into its modules cache before importing it, so the logic lives in the installed
# `mmft` package. Import `evaluate` as a module: evaluate picks the first EvaluationModule subclass it finds here.
import datasets
import evaluate

from mmft.metrics.captioning import cider_d, prepare_captions

_CITATION = """\
@inproceedings{vedantam2015cider,
  title     = {{CIDEr}: Consensus-based Image Description Evaluation},
  author    = {Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {4566--4575},
  year      = {2015}
}
"""

_DESCRIPTION = """\
CIDEr-D with the conventions of the COCO caption evaluation (pycocoevalcap 1.2):
TF-IDF vectors of 1- to 4-grams with document frequencies taken from the
references of the evaluated corpus (so the score of a caption depends on the
whole corpus, and a corpus of one image scores 0), clipped cosine similarity,
Gaussian length penalty with sigma = 6, mean over n and over references, x10,
then the mean over images. Captions are tokenized first as for `bleu` (a
pure-Python approximation of PTB tokenization + punctuation removal); on
pre-tokenized text the scores equal pycocoevalcap's.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): the reference captions of each image.
    tokenize (`bool`, *optional*, default True): apply `tokenize_caption` first.
Returns:
    cider (`float`): corpus CIDEr-D (0 to 10 in theory; COCO models score ~1.0-1.4).
Examples:
    >>> cider = mmft.metrics.load_metric("cider")
    >>> result = cider.compute(predictions=["a dog runs on grass", "a cat sleeps on a bed"],
    ...                        references=[["a dog runs on grass"], ["a cat sleeps on a bed"]])
    >>> round(result["cider"], 4)  # every caption equals its only reference: cosine 1 for n = 1..4
    10.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Cider(evaluate.Metric):
    """`evaluate` wrapper around :func:`mmft.metrics.captioning.cider_d`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            reference_urls=["https://arxiv.org/abs/1411.5726", "https://github.com/tylin/coco-caption"],
        )

    def _compute(self, predictions, references, tokenize=True) -> dict[str, float]:
        score, _ = cider_d(*prepare_captions(predictions, references, tokenize))
        return {"cider": score}
