"""VQA accuracy as an offline ``evaluate`` metric, loadable with ``evaluate.load(<this folder>)``."""

# `evaluate.load` copies this file into its modules cache before importing it,
# so relative imports cannot work here; the logic lives in the installed
# `mmft` package instead (evaluate only checks that `mmft` is importable).
# Import `evaluate` as a module, never `from evaluate import Metric`: evaluate
# picks the first EvaluationModule subclass it finds in this module's namespace.
import datasets
import evaluate

from mmft.metrics.vqa_normalization import compute_vqa_accuracy

_CITATION = """\
@inproceedings{antol2015vqa,
  title     = {{VQA}: Visual Question Answering},
  author    = {Antol, Stanislaw and Agrawal, Aishwarya and Lu, Jiasen and Mitchell, Margaret and
               Batra, Dhruv and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle = {Proceedings of the IEEE International Conference on Computer Vision (ICCV)},
  pages     = {2425--2433},
  year      = {2015}
}
@inproceedings{goyal2017making,
  title     = {Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in
               Visual Question Answering},
  author    = {Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {6904--6913},
  year      = {2017}
}
"""

_DESCRIPTION = """\
VQA accuracy, the standard metric of VQA v1/v2. Both the prediction and every
ground-truth answer are normalised as in the official evaluation script
(lowercase, punctuation rules, number words to digits, articles removed,
contractions restored). For a question with N >= 2 ground-truth answers the
score is the average over the N leave-one-out subsets of
min(1, #subset answers equal to the prediction / 3); with the usual 10 answers
this is the official formula, so 1, 2, 3 and 4+ matching annotators give
0.3, 0.6, 0.9 and 1.0. With a single ground-truth answer the score is exact
match after normalisation. The result is the mean over questions (a fraction
in [0, 1], not a percentage).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one predicted answer per question.
    references (`list` of `list` of `str`): the ground-truth answers of each
        question (10 for VQA v2, 1 for single-answer datasets).
    question_types (`list` of `str`, *optional*): one type per question. Adds an
        `accuracy_<type>` key per type, with non-alphanumeric characters of the
        type replaced by `_` (e.g. `yes/no` -> `accuracy_yes_no`).
    answer_types (`list` of `str`, *optional*): one answer type per question
        (VQAv2's `yes/no`, `number`, `other`, as the official evaluation's
        `perAnswerType`). Adds an `accuracy_answer_type_<type>` key per type
        (e.g. `accuracy_answer_type_yes_no`).
Returns:
    accuracy (`float`): mean VQA accuracy over all questions, in [0, 1].
    accuracy_<type> (`float`): mean over the questions of that type, only when
        `question_types` is given.
    accuracy_answer_type_<type> (`float`): mean over the questions of that
        answer type, only when `answer_types` is given.
Raises:
    ValueError: if there is nothing to score or the inputs differ in length.
Examples:
    >>> import evaluate
    >>> vqa = evaluate.load("path/to/mmft/metrics/vqa_accuracy")
    >>> vqa.compute(
    ...     predictions=["Two", "no"],
    ...     references=[["2"] * 3 + ["3"] * 7, ["yes"]],
    ...     question_types=["how many", "yes/no"],
    ... )
    {'accuracy': 0.45, 'accuracy_how_many': 0.9, 'accuracy_yes_no': 0.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaAccuracy(evaluate.Metric):
    """`evaluate` wrapper around :func:`mmft.metrics.vqa_normalization.compute_vqa_accuracy`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            homepage="https://visualqa.org/evaluation.html",
            reference_urls=["https://github.com/GT-Vision-Lab/VQA"],
        )

    def _compute(self, predictions, references, question_types=None, answer_types=None) -> dict[str, float]:
        return compute_vqa_accuracy(predictions, references, question_types, answer_types)
