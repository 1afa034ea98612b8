"""Several tasks in one model: `MMFTForMultiTask` (shared towers and bridge, a head per task, `for_task` giving each
task's single-task model back) and its config, registered with `AutoConfig`, `AutoModel` and `AutoModelForMultiTask`
on `import mmft`."""

from transformers import AutoConfig, AutoModel, AutoProcessor

from ..processing_mmft import MMFTProcessor
from .configuration import MMFTMultiTaskConfig, task_config
from .modeling import AutoModelForMultiTask, MMFTForMultiTask

AutoConfig.register(MMFTMultiTaskConfig.model_type, MMFTMultiTaskConfig, exist_ok=True)
AutoModel.register(MMFTMultiTaskConfig, MMFTForMultiTask, exist_ok=True)
AutoModelForMultiTask.register(MMFTMultiTaskConfig, MMFTForMultiTask, exist_ok=True)
AutoProcessor.register(MMFTMultiTaskConfig, MMFTProcessor, exist_ok=True)

__all__ = ["AutoModelForMultiTask", "MMFTForMultiTask", "MMFTMultiTaskConfig", "task_config"]
