"""Fine-tune an mmft model for visual question answering.

    accelerate launch recipes/vqa.py                                   # offline default: easy-VQA preset
    accelerate launch recipes/vqa.py --config recipes/configs/easy_vqa_lora.yaml --num_train_epochs 1
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/vqa.py --dataset my/hub-dataset

The demo preset (`DEFAULT_PRESET`) applies to its demo dataset only: no `--dataset`, or the preset's `dataset:`. On any
other dataset, or with `--config ""`, the run starts from the task's defaults for real data (pretrained Hub towers,
3 epochs, an evaluation and a checkpoint per epoch, output_dir outputs/<dataset>-<task>; offline, name an offline
tower). `--config PATH` always starts from that preset. Every `TrainingArguments` flag works; the command line
overrides the starting point, and the effective flags go to <output_dir>/run_config.yaml (`--config` replays it).
"""

import sys
from pathlib import Path

from mmft.training import main

TASK = "vqa"
DEFAULT_PRESET = Path(__file__).parent / "configs" / "easy_vqa.yaml"

if __name__ == "__main__":
    sys.exit(main(TASK, sys.argv[1:], str(DEFAULT_PRESET)))
