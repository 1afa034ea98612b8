"""Fine-tune an mmft model for image-text classification (visual entailment, memes, multimodal sentiment).

    accelerate launch recipes/classification.py          # offline default: entailment statements from easy-VQA
    accelerate launch recipes/classification.py --dataset my_data --label_column label --class_weights balanced
    accelerate launch recipes/classification.py --dataset user/memes --image_column img --multi_label true

Every `TrainingArguments` flag works; a preset's keys are flag names and the command line overrides them.
"""

import sys
from pathlib import Path

from mmft.training import main

TASK = "classification"
DEFAULT_PRESET = Path(__file__).parent / "configs" / "easy_vqa_entailment.yaml"

if __name__ == "__main__":
    sys.exit(main(TASK, sys.argv[1:], str(DEFAULT_PRESET)))
