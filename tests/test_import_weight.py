"""`import mmft` loads the model side only: a saved model loads through the Auto classes and pipelines without the
task classes or the training stack, which load on first use of `mmft.TASKS[name]` (and `mmft.Task`, ...). The
registry (`mmft.tasks`) and each task package's `__init__` (its model side) are light and do load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# (accelerate is not among them: transformers' own model loading imports it)
TRAINING_STACK = (
    "mmft.tasks.base",
    *(f"mmft.tasks.{name}.task" for name in ("vqa", "classification", "retrieval", "captioning")),
    "mmft.data",
    "mmft.training",
    "mmft.trainer",
    "datasets",
    "evaluate",
    "peft",
    "bitsandbytes",
)


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_import_mmft_registers_every_head_without_the_training_stack():
    code = (
        "import mmft\nfrom transformers.pipelines import PIPELINE_REGISTRY\n"
        "assert {'mmft-vqa', 'mmft-image-text-classification', 'mmft-image-text-retrieval', 'mmft-image-to-text'}"
        " <= set(PIPELINE_REGISTRY.supported_tasks)"
    )
    loaded = _loaded_after(code)
    assert not [name for name in TRAINING_STACK if name in loaded]
    assert "mmft.tasks.vqa.task" in _loaded_after("import mmft\nmmft.TASKS['vqa']")  # control: a task on first use


def test_a_saved_model_loads_without_the_training_stack(tmp_path):
    code = (
        "import sys\nfrom helpers_contract import tiny\nimport mmft\n"
        f"tiny(mmft.MMFTForVisualQuestionAnswering).save_pretrained({str(tmp_path)!r})\n"
        "from transformers import AutoModelForVisualQuestionAnswering\n"
        f"AutoModelForVisualQuestionAnswering.from_pretrained({str(tmp_path)!r})"
    )
    loaded = _loaded_after(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n{code}")
    assert not [name for name in TRAINING_STACK if name in loaded]
