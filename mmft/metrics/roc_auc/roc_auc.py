"""Area under the ROC curve as an offline ``evaluate`` metric, for binary and multi-label tasks."""

# `evaluate.load` copies this file into its modules cache before importing it, so the logic lives in the installed
# `mmft` package. Import `evaluate` as a module: evaluate picks the first EvaluationModule subclass it finds here.
import datasets
import evaluate

from mmft.metrics.classification import binary_roc_auc, multilabel_roc_auc

_DESCRIPTION = """\
ROC AUC: the probability that a random positive example scores higher than a
random negative one, computed exactly as the Mann-Whitney U statistic with
average ranks, so a tie between a positive and a negative counts one half.
Default config ("binary"): one score for the positive class per example and 0/1
references; both classes must be present or it raises.
Config "multilabel": an N x K matrix of scores and N x K 0/1 references; the AUC
of each label, and their mean over the labels whose references hold both classes.
The other labels are skipped (None per label) and counted.
"""

_KWARGS_DESCRIPTION = """
Args:
    prediction_scores (`list` of `float`, or `list` of `list` of `float` for
        "multilabel"): scores (probabilities or logits) for the positive class.
    references (`list` of `int`, or `list` of `list` of `int`): 0/1 labels.
Returns:
    roc_auc (`float`): the AUC ("binary") or the macro AUC ("multilabel").
    roc_auc_per_label (`list` of `float` or `None`, "multilabel" only).
    num_labels_skipped (`int`, "multilabel" only): labels without both classes.
Raises:
    ValueError: a single class in the references (binary), no usable label
        (multilabel), NaN scores, or shape mismatches.
Examples:
    >>> roc_auc = mmft.metrics.load_metric("roc_auc")
    >>> roc_auc.compute(prediction_scores=[0.1, 0.4, 0.4, 0.8], references=[0, 0, 1, 1])
    {'roc_auc': 0.875}
    >>> multilabel = mmft.metrics.load_metric("roc_auc", config_name="multilabel")
    >>> multilabel.compute(prediction_scores=[[0.9, 0.2], [0.1, 0.3]], references=[[1, 0], [0, 0]])
    {'roc_auc': 1.0, 'roc_auc_per_label': [1.0, None], 'num_labels_skipped': 1}
"""

_CONFIGS = ("default", "binary", "multilabel")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RocAuc(evaluate.Metric):
    """`evaluate` wrapper around :mod:`mmft.metrics.classification` ROC AUC."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in _CONFIGS:
            raise ValueError(f"unknown config {self.config_name!r}; known: {', '.join(_CONFIGS)}")
        # float64, not float32: casting distinct scores to float32 could create ties that change the AUC.
        score, label = datasets.Value("float64"), datasets.Value("int64")
        if self.config_name == "multilabel":
            score, label = datasets.Sequence(score), datasets.Sequence(label)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"prediction_scores": score, "references": label}),
            reference_urls=["https://en.wikipedia.org/wiki/Mann%E2%80%93Whitney_U_test"],
        )

    def _compute(self, prediction_scores, references) -> dict:
        if self.config_name == "multilabel":
            return multilabel_roc_auc(prediction_scores, references)
        return {"roc_auc": binary_roc_auc(prediction_scores, references)}
