"""Several tasks in one model and one run.

The model side: `MMFTForMultiTask` (shared towers and bridge, a head per task, `for_task` giving each task's
single-task model back) and its config, registered with `AutoConfig`, `AutoModel` and `AutoModelForMultiTask` on
`import mmft`. The data side: which task each optimizer step trains on (`sampling`) and the batch stream (`stream`).
The Trainer that saves and restores the stream's position (`mmft.multitask.trainer`) is imported from its module,
so importing the model, the sampler or the stream does not pull in the training stack.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from ..processing_mmft import MMFTProcessor
from .configuration import MMFTMultiTaskConfig, task_config
from .modeling import AutoModelForMultiTask, MMFTForMultiTask
from .sampling import STRATEGIES, TaskSampler, task_draw_counts
from .stream import MultiTaskStream

AutoConfig.register(MMFTMultiTaskConfig.model_type, MMFTMultiTaskConfig, exist_ok=True)
AutoModel.register(MMFTMultiTaskConfig, MMFTForMultiTask, exist_ok=True)
AutoModelForMultiTask.register(MMFTMultiTaskConfig, MMFTForMultiTask, exist_ok=True)
AutoProcessor.register(MMFTMultiTaskConfig, MMFTProcessor, exist_ok=True)

__all__ = [
    "STRATEGIES",
    "AutoModelForMultiTask",
    "MMFTForMultiTask",
    "MMFTMultiTaskConfig",
    "MultiTaskStream",
    "TaskSampler",
    "task_config",
    "task_draw_counts",
]
