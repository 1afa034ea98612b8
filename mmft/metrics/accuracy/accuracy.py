"""Classification accuracy as an offline ``evaluate`` metric: single-label, or subset accuracy for multi-label."""

# `evaluate.load` copies this file into its modules cache before importing it, so the logic lives in the installed
# `mmft` package. Import `evaluate` as a module: evaluate picks the first EvaluationModule subclass it finds here.
import datasets
import evaluate

from mmft.metrics.classification import accuracy, subset_accuracy

_DESCRIPTION = """\
Accuracy: the fraction of examples whose prediction equals the reference, in [0, 1].
Default config: one integer class id per example (binary tasks are ids 0 and 1).
Config "multilabel": one 0/1 vector per example; an example counts as correct only
when its whole vector matches (subset or exact-match accuracy), so a single wrong
label makes it wrong.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `int` for "multilabel"):
        predicted class ids, or predicted 0/1 label vectors.
    references (same type as `predictions`): the true class ids or 0/1 vectors.
Returns:
    accuracy (`float`): fraction of exactly correct examples, in [0, 1].
Raises:
    ValueError: empty input, length or shape mismatch, negative ids, or values
        other than 0/1 in a multi-label vector.
Examples:
    >>> accuracy = mmft.metrics.load_metric("accuracy")
    >>> accuracy.compute(predictions=[0, 2, 1, 1], references=[0, 1, 1, 1])
    {'accuracy': 0.75}
    >>> multilabel = mmft.metrics.load_metric("accuracy", config_name="multilabel")
    >>> multilabel.compute(predictions=[[1, 0, 1], [0, 1, 0]], references=[[1, 0, 1], [0, 1, 1]])
    {'accuracy': 0.5}
"""

_CONFIGS = ("default", "multilabel")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """`evaluate` wrapper around :mod:`mmft.metrics.classification` accuracy."""

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

    def _compute(self, predictions, references) -> dict[str, float]:
        score = subset_accuracy if self.config_name == "multilabel" else accuracy
        return {"accuracy": score(predictions, references)}
