"""Fine-tune an mmft generative VQA model: the captioning decoder reads the question and writes the answer.

    accelerate launch recipes/generative_vqa.py            # offline default: easy-VQA, SmolLM2 decoder with LoRA
    accelerate launch recipes/generative_vqa.py --lora_decoder frozen --num_query_tokens 16
    accelerate launch recipes/generative_vqa.py --dataset vqav2 --questions_file q.json --annotations_file a.json \
        --image_dir train2014/ --eval_questions_file vq.json --eval_annotations_file va.json --eval_image_dir val2014/
    accelerate launch recipes/generative_vqa.py --dataset my_folder --num_beams 3

The demo preset (`DEFAULT_PRESET`) applies to its demo dataset only: no `--dataset`, or the preset's `dataset:`. On any
other dataset, or with `--config ""`, the run starts from the task's defaults for real data (pretrained Hub towers,
3 epochs, an evaluation and a checkpoint per epoch, output_dir outputs/<dataset>-<task>; offline, name an offline
tower). `--config PATH` always starts from that preset. Every `TrainingArguments` flag works; the command line
overrides the starting point, and the effective flags go to <output_dir>/run_config.yaml (`--config` replays it).
"""

import sys
from pathlib import Path

from mmft.training import main

TASK = "generative_vqa"
DEFAULT_PRESET = Path(__file__).parent / "configs" / "easy_vqa_generative.yaml"

if __name__ == "__main__":
    sys.exit(main(TASK, sys.argv[1:], str(DEFAULT_PRESET)))
