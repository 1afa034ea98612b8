"""Fine-tune an mmft model for image-text retrieval: a contrastive dual encoder, re-ranked by the bridge.

    accelerate launch recipes/retrieval.py          # offline default: synthetic scenes with five captions each
    accelerate launch recipes/retrieval.py --dataset my_data --rerank_k 32
    accelerate launch recipes/retrieval.py --dataset coco_json --captions_file dataset_coco.json --image_dir coco/
    accelerate launch recipes/retrieval.py --dataset nlphuji/flickr30k --caption_column caption --split_column split

Flickr30k on the Hub has a single `test` split holding all 31,014 images (five captions each); its `split` column
says each image's Karpathy split, so `--split_column split` makes train (29,000) / val (1,014) / test (1,000), and
the run evaluates on `test` (the first of test/validation/val).

Every `TrainingArguments` flag works; a preset's keys are flag names and the command line overrides them.
"""

import sys
from pathlib import Path

from mmft.training import main

TASK = "retrieval"
DEFAULT_PRESET = Path(__file__).parent / "configs" / "scenes_retrieval.yaml"

if __name__ == "__main__":
    sys.exit(main(TASK, sys.argv[1:], str(DEFAULT_PRESET)))
