"""mmft: fine-tune vision-language models built from a vision tower, a text tower and a cross-modal bridge.

Importing mmft registers its config, models, processor and pipelines with transformers, so a saved mmft folder
loads with its task's Auto class (`AutoModelForVisualQuestionAnswering`, `mmft.AutoModelForImageTextClassification`,
...) and `pipeline(...)`, with no `trust_remote_code`. Each task's model side is registered by `mmft.tasks` (one line
per task package) and its public classes are `mmft.<name>`, read from the registry. It imports the model side only:
the task classes and the training stack (`mmft.tasks.base`, datasets, peft, evaluate) load on first use of
`mmft.TASKS[name]`, `mmft.Task`, ...
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from . import tasks
from .auto import register_head
from .bridge import BRIDGES, Bridge, BridgeOutput, register_bridge
from .configuration_mmft import MMFTConfig
from .lora import LoraPlan
from .modeling_mmft import MMFTModel, MMFTModelOutput, MMFTPreTrainedModel
from .multitask import AutoModelForMultiTask, MMFTForMultiTask, MMFTMultiTaskConfig
from .offline_assets import resolve_name
from .processing_mmft import MMFTProcessor
from .rerank import RERANK_SCORES
from .tasks import TASKS, get_task, register_task
from .towers import vision_config_from_name

__version__ = "0.1.0"

AutoConfig.register(MMFTConfig.model_type, MMFTConfig, exist_ok=True)
AutoModel.register(MMFTConfig, MMFTModel, exist_ok=True)
AutoProcessor.register(MMFTConfig, MMFTProcessor, exist_ok=True)

_LAZY = {"CardInfo": "tasks", "Task": "tasks", "TaskData": "tasks", "parse_recipe_args": "arguments"}


def __getattr__(name: str):
    """The public classes of every registered task package (`MMFTForVisualQuestionAnswering`, `VQAPipeline`, ...),
    and the task layer and the recipe parser on first use (PEP 562): loading a saved model never imports the
    training stack."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    try:
        return tasks.exported(name)
    except AttributeError:
        raise AttributeError(f"module 'mmft' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "AutoModelForMultiTask",
    "BRIDGES",
    "Bridge",
    "BridgeOutput",
    "CardInfo",
    "LoraPlan",
    "MMFTConfig",
    "MMFTForMultiTask",
    "MMFTModel",
    "MMFTModelOutput",
    "MMFTMultiTaskConfig",
    "MMFTPreTrainedModel",
    "MMFTProcessor",
    "RERANK_SCORES",
    "TASKS",
    "Task",
    "TaskData",
    "get_task",
    "parse_recipe_args",
    "register_bridge",
    "register_head",
    "register_task",
    "resolve_name",
    "vision_config_from_name",
]
__all__ += tasks.exported_names()  # each registered task package's public names
