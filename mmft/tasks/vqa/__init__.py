"""VQA: an image and a question in, an answer out (classification over an answer vocabulary).

The package's `__init__` is its model side (what `import mmft` loads): the head, which declares its Auto class and
pipeline, and the public names (`__all__`, also `mmft.<name>`). The task (`task.py`: data, training, evaluation, with
the readers only it uses, `answers.py` and `vqav2.py`) loads on first use of `mmft.TASKS["vqa"]`.
"""

from .modeling import MMFTForVisualQuestionAnswering
from .pipeline import VQAPipeline

model_class = MMFTForVisualQuestionAnswering
task_class = "VQATask"  # in .task

__all__ = ["MMFTForVisualQuestionAnswering", "VQAPipeline"]
