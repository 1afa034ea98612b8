"""Captioning: an image in, a caption out, written by a causal LM decoder reading the bridge.

The package's `__init__` is its model side (what `import mmft` loads): the head, which declares its Auto class and
pipeline, its processor, and the public names (`__all__`, also `mmft.<name>`). The task (`task.py`) and its evaluation
(`evaluation.py`: generation, CIDEr-D and the baselines) load on first use of `mmft.TASKS["captioning"]`.
"""

from .modeling import MMFTForConditionalGeneration
from .pipeline import ImageToTextPipeline
from .processing import MMFTCaptionProcessor

model_class = MMFTForConditionalGeneration
task_class = "CaptioningTask"  # in .task

__all__ = ["ImageToTextPipeline", "MMFTCaptionProcessor", "MMFTForConditionalGeneration"]
