"""Macro and per-class precision, recall and F1 as an offline ``evaluate`` metric (single-label or multi-label)."""

# `evaluate.load` copies this file into its modules cache before importing it, so the logic lives in the installed
# `mmft` package. Import `evaluate` as a module: evaluate picks the first EvaluationModule subclass it finds here.
import datasets
import evaluate

from mmft.metrics.classification import multilabel_precision_recall_f1, precision_recall_f1

_DESCRIPTION = """\
Precision, recall and F1 per class and their unweighted (macro) mean, plus the
support (number of true examples) of each class.
Default config: one integer class id per example; class k's precision is
TP_k / (TP_k + FP_k), recall TP_k / (TP_k + FN_k), F1 their harmonic mean.
Config "multilabel": one 0/1 vector per example; the same figures per label
(column), each label scored as its own binary problem.
Zero division gives 0.0: a class never predicted has precision 0.0, a class that
never occurs has recall 0.0, and F1 is 0.0 when precision + recall is 0.
The macro mean runs over the classes that occur in the references or in the
predictions. Classes listed only because `num_classes` is larger appear in the
per-class lists with 0.0 and support 0 but are not part of the macro mean.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `int` for "multilabel"):
        predicted class ids, or predicted 0/1 label vectors.
    references (same type as `predictions`): the true class ids or 0/1 vectors.
    num_classes (`int`, *optional*, default config only): length of the
        per-class lists; defaults to 1 + the largest id seen. An id >= num_classes
        raises.
Returns:
    precision_macro, recall_macro, f1_macro (`float`): macro means, in [0, 1].
    precision_per_class, recall_per_class, f1_per_class (`list` of `float`):
        index = class id (label index for "multilabel").
    support (`list` of `int`): true examples per class.
Examples:
    >>> f1 = mmft.metrics.load_metric("f1")
    >>> result = f1.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_classes=3)
    >>> result["precision_per_class"], result["recall_per_class"], result["support"]
    ([1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [2, 1, 0])
    >>> round(result["f1_macro"], 4)  # (2/3 + 2/3) / 2: class 2 is absent, not averaged
    0.6667
"""

_CONFIGS = ("default", "multilabel")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    """`evaluate` wrapper around :mod:`mmft.metrics.classification` precision/recall/F1."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in _CONFIGS:
            raise ValueError(f"unknown config {self.config_name!r}; known: {', '.join(_CONFIGS)}")
        label = datasets.Value("int64")
        feature = datasets.Sequence(label) if self.config_name == "multilabel" else label
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": feature, "references": feature}),
        )

    def _compute(self, predictions, references, num_classes=None) -> dict:
        if self.config_name == "multilabel":
            if num_classes is not None:
                raise ValueError("num_classes is for the default config; multilabel uses the vector length")
            return multilabel_precision_recall_f1(predictions, references)
        return precision_recall_f1(predictions, references, num_classes)
