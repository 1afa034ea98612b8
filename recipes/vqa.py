"""Fine-tune an mmft model for visual question answering.

    accelerate launch recipes/vqa.py                                   # offline default: easy-VQA preset
    accelerate launch recipes/vqa.py --config recipes/configs/easy_vqa_lora.yaml --num_train_epochs 1
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/vqa.py --dataset my/hub-dataset

Every `TrainingArguments` flag works; a preset's keys are flag names and the command line overrides them.
"""

from pathlib import Path

from mmft.arguments import parse_recipe_args
from mmft.vqa_training import run_vqa

DEFAULT_PRESET = Path(__file__).parent / "configs" / "easy_vqa.yaml"


def main() -> None:
    model_args, data_args, lora_args, training_args, output_args = parse_recipe_args(default_config=str(DEFAULT_PRESET))
    run_vqa(model_args, data_args, lora_args, training_args, output_args=output_args)


if __name__ == "__main__":
    main()
