"""Hub publishing, one module per job: the model card (`card`), the all-or-nothing final save (`save`), loading a
model saved as a LoRA adapter (`adapters`) and the upload of `output_dir` (`push`).

Every name is re-exported here, so `from mmft.hub import save_final` (and the rest) reads as before the split.
"""

from __future__ import annotations

from .adapters import load_adapter_model

# Importable from mmft.hub as before the split, though not in `__all__` (mmft.training imports full_parameters)
from .card import LIMITATIONS, describe_tower, final_metrics, render_model_card, uses_lora, write_model_card  # noqa: F401
from .push import push_output_dir
from .save import STAGING_PREFIX, WEIGHT_FILE_PATTERNS, full_parameters, save_final  # noqa: F401

__all__ = [
    "describe_tower",
    "final_metrics",
    "load_adapter_model",
    "push_output_dir",
    "render_model_card",
    "save_final",
    "write_model_card",
]
