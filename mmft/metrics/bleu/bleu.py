"""Corpus BLEU-1..4 as the COCO caption evaluation computes it, as an offline ``evaluate`` metric."""

# `evaluate.load` copies this file into its modules cache before importing it, so the logic lives in the installed
# `mmft` package. Import `evaluate` as a module: evaluate picks the first EvaluationModule subclass it finds here.
import datasets
import evaluate

from mmft.metrics.captioning import corpus_bleu, prepare_captions

_CITATION = """\
@inproceedings{papineni2002bleu,
  title     = {{BLEU}: a Method for Automatic Evaluation of Machine Translation},
  author    = {Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle = {Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics},
  pages     = {311--318},
  year      = {2002}
}
@article{chen2015microsoft,
  title   = {Microsoft {COCO} Captions: Data Collection and Evaluation Server},
  author  = {Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and
             Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  journal = {arXiv preprint arXiv:1504.00325},
  year    = {2015}
}
"""

_DESCRIPTION = """\
Corpus-level BLEU-1..4 with the conventions of the COCO caption evaluation
(pycocoevalcap 1.2): modified n-gram precisions clipped by the best single
reference and summed over the corpus, the "closest" reference length (ties to
the shorter), the brevity penalty exp(1 - r/c), and its smoothing constants
(1e-15 added to every match count, 1e-9 to every total). Captions are lowercased
and tokenized first with a pure-Python approximation of the PTB tokenizer plus
punctuation removal (`mmft.metrics.caption_tokenize`); on pre-tokenized text the
scores equal pycocoevalcap's, on raw text they differ only where the tokenizers
differ. Scores are fractions in [0, 1] (COCO papers often print them x100).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): the reference captions of each image (COCO: ~5).
    tokenize (`bool`, *optional*, default True): apply `tokenize_caption` first;
        False splits on whitespace only (for text tokenized elsewhere).
Returns:
    bleu (`float`): BLEU-4.
    bleu_1, bleu_2, bleu_3, bleu_4 (`float`): cumulative BLEU-n.
Examples:
    >>> bleu = mmft.metrics.load_metric("bleu")
    >>> result = bleu.compute(predictions=["A dog runs on the grass."],
    ...                       references=[["a dog runs on the grass", "a brown dog is running"]])
    >>> round(result["bleu"], 4), round(result["bleu_1"], 4)
    (1.0, 1.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    """`evaluate` wrapper around :func:`mmft.metrics.captioning.corpus_bleu`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            reference_urls=["https://aclanthology.org/P02-1040/", "https://github.com/tylin/coco-caption"],
        )

    def _compute(self, predictions, references, tokenize=True) -> dict[str, float]:
        scores = corpus_bleu(*prepare_captions(predictions, references, tokenize))
        return {"bleu": scores[3], **{f"bleu_{n}": score for n, score in enumerate(scores, start=1)}}
