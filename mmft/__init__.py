"""mmft: fine-tune vision-language models built from a vision tower, a text tower and a cross-modal bridge.

Importing mmft registers its config, models and processor with the transformers Auto classes, so a saved mmft
folder loads with `AutoModelForVisualQuestionAnswering.from_pretrained(path)` and no `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForVisualQuestionAnswering,
    AutoProcessor,
)

from .bridge import BRIDGES, Bridge, BridgeOutput
from .configuration_mmft import MMFTConfig
from .lora import LoraPlan
from .modeling_mmft import MMFTForVisualQuestionAnswering, MMFTModel, MMFTModelOutput, MMFTPreTrainedModel
from .pipeline import VQAPipeline
from .pipeline import register as _register_pipeline
from .processing_mmft import MMFTProcessor

__version__ = "0.1.0"

AutoConfig.register(MMFTConfig.model_type, MMFTConfig, exist_ok=True)
AutoModel.register(MMFTConfig, MMFTModel, exist_ok=True)
AutoModelForVisualQuestionAnswering.register(MMFTConfig, MMFTForVisualQuestionAnswering, exist_ok=True)
AutoProcessor.register(MMFTConfig, MMFTProcessor, exist_ok=True)
_register_pipeline()  # pipeline("mmft-vqa", model=...)

__all__ = [
    "BRIDGES",
    "Bridge",
    "BridgeOutput",
    "LoraPlan",
    "MMFTConfig",
    "MMFTForVisualQuestionAnswering",
    "MMFTModel",
    "MMFTModelOutput",
    "MMFTPreTrainedModel",
    "MMFTProcessor",
    "VQAPipeline",
]
