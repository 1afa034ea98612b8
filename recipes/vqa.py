"""Fine-tune an mmft model for visual question answering.

    accelerate launch recipes/vqa.py                                   # offline default: easy-VQA preset
    accelerate launch recipes/vqa.py --config recipes/configs/easy_vqa_lora.yaml --num_train_epochs 1
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/vqa.py --dataset my/hub-dataset

Every `TrainingArguments` flag works; a preset's keys are flag names and the command line overrides them.
"""

import sys
from pathlib import Path

from mmft.training import main

TASK = "vqa"
DEFAULT_PRESET = Path(__file__).parent / "configs" / "easy_vqa.yaml"

if __name__ == "__main__":
    sys.exit(main(TASK, sys.argv[1:], str(DEFAULT_PRESET)))
