"""Generative VQA: an image and a question in, an answer written by the captioning decoder.

The package's `__init__` is its model side (what `import mmft` loads): the head (the captioning model under its own
name, Auto class and pipeline), its processors (`MMFTPromptProcessor` for questions, `MMFTChatProcessor` for
conversations through the decoder's chat template), and the public names (`__all__`, also `mmft.<name>`). The task
(`task.py`: data, targets, the collators; on conversation data `conversation_task.py`) and its evaluation
(`evaluation.py`, `conversation_evaluation.py`) load on first use of `mmft.TASKS["generative_vqa"]`.
"""

from .chat_processing import MMFTChatProcessor
from .modeling import AutoModelForGenerativeVQA, MMFTForGenerativeVQA
from .pipeline import ImageTextToTextPipeline
from .processing import MMFTPromptProcessor

model_class = MMFTForGenerativeVQA
task_class = "GenerativeVQATask"  # in .task

__all__ = [
    "AutoModelForGenerativeVQA",
    "ImageTextToTextPipeline",
    "MMFTChatProcessor",
    "MMFTForGenerativeVQA",
    "MMFTPromptProcessor",
]
