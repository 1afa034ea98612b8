"""Image-text retrieval: a dual encoder whose top candidates the bridge re-ranks.

The package's `__init__` is its model side (what `import mmft` loads): the head, its Auto class and pipeline, and the
public names (`__all__`, also `mmft.<name>`). The task (`task.py`), its evaluation (`evaluation.py`), gallery search
(`search.py`) and its `mmft search` verb (`command.py`) load on first use.
"""

from .modeling import AutoModelForImageTextRetrieval, MMFTForImageTextRetrieval
from .pipeline import ImageTextMatchingPipeline

model_class = MMFTForImageTextRetrieval
task_class = "RetrievalTask"  # in .task

__all__ = ["AutoModelForImageTextRetrieval", "ImageTextMatchingPipeline", "MMFTForImageTextRetrieval"]
