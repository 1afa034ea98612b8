"""Fine-tune one mmft model on several tasks at once: shared towers and bridge, a head per task.

    accelerate launch recipes/multitask.py             # offline default: easy-VQA VQA + entailment + scenes retrieval
    accelerate launch recipes/multitask.py --task_sampling round_robin --max_steps 600
    accelerate launch recipes/multitask.py --config my_tasks.yaml --vqa.dataset my/vqa-data

The preset (`--config`, default recipes/configs/multitask_easy_vqa_scenes.yaml) holds the shared flags and a `tasks:`
mapping (each task's own flags and its loss, sampling and selection weights); `--flag value` overrides a shared flag,
`--<task>.<flag> value` one task's. Each task's model is saved in <output_dir>/<task> (its Auto class, pipeline and
`mmft predict` load it), the joint model in <output_dir>. See docs/multitask.md.
"""

import sys

from mmft.multitask_training import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
