"""Fine-tune an mmft model for image-text retrieval: a contrastive dual encoder, re-ranked by the bridge.

    accelerate launch recipes/retrieval.py          # offline default: synthetic scenes with five captions each
    accelerate launch recipes/retrieval.py --dataset my_data --rerank_k 32
    accelerate launch recipes/retrieval.py --dataset coco_json --captions_file dataset_coco.json --image_dir coco/
    accelerate launch recipes/retrieval.py --dataset nlphuji/flickr30k --dataset_revision refs/convert/parquet \
        --caption_column caption --split_column split

Flickr30k on the Hub has a single `test` split holding all 31,014 images (five captions each); its `split` column
says each image's Karpathy split, so `--split_column split` makes train (29,000) / val (1,014) / test (1,000), and
the run evaluates on `test`. Its `main` branch is a loading script, which `datasets` no longer runs (and mmft never
asks for `trust_remote_code`): `--dataset_revision refs/convert/parquet` reads the Hub's own parquet export of it.

The demo preset (`DEFAULT_PRESET`) applies to its demo dataset only: no `--dataset`, or the preset's `dataset:`. On any
other dataset, or with `--config ""`, the run starts from the task's defaults for real data (pretrained Hub towers,
3 epochs, an evaluation and a checkpoint per epoch, output_dir outputs/<dataset>-<task>; offline, name an offline
tower). `--config PATH` always starts from that preset. Every `TrainingArguments` flag works; the command line
overrides the starting point, and the effective flags go to <output_dir>/run_config.yaml (`--config` replays it).
"""

import sys
from pathlib import Path

from mmft.training import main

TASK = "retrieval"
DEFAULT_PRESET = Path(__file__).parent / "configs" / "scenes_retrieval.yaml"

if __name__ == "__main__":
    sys.exit(main(TASK, sys.argv[1:], str(DEFAULT_PRESET)))
