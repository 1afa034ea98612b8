"""`import mmft` loads the model side only: a saved model loads through the Auto classes and pipelines without the
task layer or the training stack, which load on first use of `mmft.TASKS` (and the other task names)."""

from __future__ import annotations

import json
import subprocess
import sys

# (accelerate is not among them: transformers' own model loading imports it)
TRAINING_STACK = (
    "mmft.tasks",
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
    assert "mmft.tasks" in _loaded_after("import mmft\nmmft.TASKS")  # control: the task layer on first use
