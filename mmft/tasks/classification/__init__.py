"""Image-text classification: an image and a text in, label(s) out (single-label, multi-label or binary).

The package's `__init__` is its model side (what `import mmft` loads): the head, its Auto class and pipeline, and the
public names (`__all__`, also `mmft.<name>`). The task (`task.py`, with its offline dataset `easy_vqa_entailment.py`)
loads on first use of `mmft.TASKS["classification"]`.
"""

from .modeling import AutoModelForImageTextClassification, MMFTForImageTextClassification
from .pipeline import ImageTextClassificationPipeline

model_class = MMFTForImageTextClassification
task_class = "ClassificationTask"  # in .task

__all__ = ["AutoModelForImageTextClassification", "ImageTextClassificationPipeline", "MMFTForImageTextClassification"]
