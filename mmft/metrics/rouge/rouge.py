"""ROUGE-L as the COCO caption evaluation computes it, as an offline ``evaluate`` metric."""

# `evaluate.load` copies this file into its modules cache before importing it, so the logic lives in the installed
# `mmft` package. Import `evaluate` as a module: evaluate picks the first EvaluationModule subclass it finds here.
import datasets
import evaluate

from mmft.metrics.captioning import prepare_captions, rouge_l

_CITATION = """\
@inproceedings{lin2004rouge,
  title     = {{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author    = {Lin, Chin-Yew},
  booktitle = {Text Summarization Branches Out},
  pages     = {74--81},
  year      = {2004}
}
"""

_DESCRIPTION = """\
ROUGE-L with the conventions of the COCO caption evaluation (pycocoevalcap 1.2):
for each image, the longest common subsequence (LCS) of the caption with every
reference gives a precision LCS/len(caption) and a recall LCS/len(reference);
the best precision and the best recall over the references (each maximised
separately) combine into F = (1 + b^2) P R / (R + b^2 P) with b = 1.2; the
result is the mean over images, in [0, 1]. Captions are tokenized first as for
`bleu`; on pre-tokenized text the scores equal pycocoevalcap's.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): the reference captions of each image.
    tokenize (`bool`, *optional*, default True): apply `tokenize_caption` first.
Returns:
    rougeL (`float`): mean ROUGE-L F-measure, in [0, 1].
Examples:
    >>> rouge = mmft.metrics.load_metric("rouge")
    >>> rouge.compute(predictions=["a dog runs fast"], references=[["a dog runs"]])  # P = 3/4, R = 1
    {'rougeL': 0.8798076923076923}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    """`evaluate` wrapper around :func:`mmft.metrics.captioning.rouge_l`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            reference_urls=["https://aclanthology.org/W04-1013/", "https://github.com/tylin/coco-caption"],
        )

    def _compute(self, predictions, references, tokenize=True) -> dict[str, float]:
        score, _ = rouge_l(*prepare_captions(predictions, references, tokenize))
        return {"rougeL": score}
