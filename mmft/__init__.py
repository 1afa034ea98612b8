"""mmft: fine-tune vision-language models built from a vision tower, a text tower and a cross-modal bridge.

Importing mmft registers its config, models, processor and pipelines with transformers, so a saved mmft folder
loads with its task's Auto class (`AutoModelForVisualQuestionAnswering`, `mmft.AutoModelForImageTextClassification`,
...) and `pipeline(...)`, with no `trust_remote_code`. It imports the model side only: the task registry and the
training stack (`mmft.tasks`, datasets, peft, evaluate) load on first use of `mmft.TASKS`, `mmft.register_task`, ...
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .auto import AutoModelForImageTextClassification, AutoModelForImageTextRetrieval, register_head
from .bridge import BRIDGES, Bridge, BridgeOutput, register_bridge
from .configuration_mmft import MMFTConfig
from .lora import LoraPlan
from .modeling_mmft import MMFTModel, MMFTModelOutput, MMFTPreTrainedModel
from .offline_assets import resolve_name
from .processing_mmft import MMFTProcessor
from .rerank import RERANK_SCORES
from .tasks.captioning.modeling import MMFTForConditionalGeneration
from .tasks.captioning.pipeline import ImageToTextPipeline
from .tasks.captioning.processing import MMFTCaptionProcessor
from .tasks.classification.modeling import MMFTForImageTextClassification
from .tasks.classification.pipeline import ImageTextClassificationPipeline
from .tasks.retrieval.modeling import MMFTForImageTextRetrieval
from .tasks.retrieval.pipeline import ImageTextMatchingPipeline
from .tasks.vqa.modeling import MMFTForVisualQuestionAnswering
from .tasks.vqa.pipeline import VQAPipeline
from .towers import vision_config_from_name

__version__ = "0.1.0"

AutoConfig.register(MMFTConfig.model_type, MMFTConfig, exist_ok=True)
AutoModel.register(MMFTConfig, MMFTModel, exist_ok=True)
AutoProcessor.register(MMFTConfig, MMFTProcessor, exist_ok=True)
for _head in (
    MMFTForVisualQuestionAnswering,
    MMFTForImageTextClassification,
    MMFTForImageTextRetrieval,
    MMFTForConditionalGeneration,
):
    register_head(_head)  # its Auto class and pipeline, which the head declares

_TASK_NAMES = ("TASKS", "CardInfo", "Task", "TaskData", "get_task", "register_task")


def __getattr__(name: str):
    """The task layer and the recipe parser on first use (PEP 562): loading a saved model never imports the
    training stack."""
    if name in _TASK_NAMES:
        from . import tasks

        return getattr(tasks, name)
    if name == "parse_recipe_args":
        from .arguments import parse_recipe_args

        return parse_recipe_args
    raise AttributeError(f"module 'mmft' has no attribute {name!r}")


__all__ = [
    "AutoModelForImageTextClassification",
    "AutoModelForImageTextRetrieval",
    "BRIDGES",
    "Bridge",
    "BridgeOutput",
    "CardInfo",
    "ImageTextClassificationPipeline",
    "ImageTextMatchingPipeline",
    "ImageToTextPipeline",
    "LoraPlan",
    "MMFTCaptionProcessor",
    "MMFTConfig",
    "MMFTForConditionalGeneration",
    "MMFTForImageTextClassification",
    "MMFTForImageTextRetrieval",
    "MMFTForVisualQuestionAnswering",
    "MMFTModel",
    "MMFTModelOutput",
    "MMFTPreTrainedModel",
    "MMFTProcessor",
    "RERANK_SCORES",
    "TASKS",
    "Task",
    "TaskData",
    "VQAPipeline",
    "get_task",
    "parse_recipe_args",
    "register_bridge",
    "register_task",
    "resolve_name",
    "vision_config_from_name",
]
