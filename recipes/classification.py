"""Fine-tune an mmft model for image-text classification (visual entailment, memes, multimodal sentiment).

    accelerate launch recipes/classification.py          # offline default: entailment statements from easy-VQA
    accelerate launch recipes/classification.py --dataset my_data --label_column label --class_weights balanced
    accelerate launch recipes/classification.py --dataset user/memes --image_column img --multi_label true

The demo preset (`DEFAULT_PRESET`) applies to its demo dataset only: no `--dataset`, or the preset's `dataset:`. On any
other dataset, or with `--config ""`, the run starts from the task's defaults for real data (pretrained Hub towers,
3 epochs, an evaluation and a checkpoint per epoch, output_dir outputs/<dataset>-<task>; offline, name an offline
tower). `--config PATH` always starts from that preset. Every `TrainingArguments` flag works; the command line
overrides the starting point, and the effective flags go to <output_dir>/run_config.yaml (`--config` replays it).
"""

import sys
from pathlib import Path

from mmft.training import main

TASK = "classification"
DEFAULT_PRESET = Path(__file__).parent / "configs" / "easy_vqa_entailment.yaml"

if __name__ == "__main__":
    sys.exit(main(TASK, sys.argv[1:], str(DEFAULT_PRESET)))
