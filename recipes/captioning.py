"""Fine-tune an mmft captioning model: a pretrained causal LM decoder reads the bridge's fused image states.

    accelerate launch recipes/captioning.py             # offline default: synthetic scenes, SmolLM2 decoder with LoRA
    accelerate launch recipes/captioning.py --lora_decoder frozen --num_query_tokens 16
    accelerate launch recipes/captioning.py --dataset coco_json --captions_file dataset_coco.json --image_dir coco/
    accelerate launch recipes/captioning.py --decoder_model my_decoder_folder --num_beams 3

The demo preset (`DEFAULT_PRESET`) applies to its demo dataset only: no `--dataset`, or the preset's `dataset:`. On any
other dataset, or with `--config ""`, the run starts from the task's defaults for real data (pretrained Hub towers,
3 epochs, an evaluation and a checkpoint per epoch, output_dir outputs/<dataset>-<task>; offline, name an offline
tower). `--config PATH` always starts from that preset. Every `TrainingArguments` flag works; the command line
overrides the starting point, and the effective flags go to <output_dir>/run_config.yaml (`--config` replays it).
"""

import sys
from pathlib import Path

from mmft.training import main

TASK = "captioning"
DEFAULT_PRESET = Path(__file__).parent / "configs" / "scenes_captioning.yaml"

if __name__ == "__main__":
    sys.exit(main(TASK, sys.argv[1:], str(DEFAULT_PRESET)))
