"""Gradient norm that reaches each part of the preset model at initialisation, for several `initializer_range`s.

    python benchmarks/init_gradients.py                       # fixed 0.02 (BERT's value) vs fan-in (the default)
    python benchmarks/init_gradients.py --ranges 0.02 0.08 fan_in --batch 64

One batch of easy-VQA training questions, one forward + backward, no optimizer step. docs/ablation.md uses it to
explain why a fixed 0.02 left the from-scratch vision tower unable to learn shapes within the study's budget.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import recipe_model  # noqa: E402

from mmft import get_task, parse_recipe_args  # noqa: E402

PARTS = {
    "vision tower": "mmft.vision_tower.",
    "text tower": "mmft.text_tower.",
    "projections": "mmft.",
    "bridge": "mmft.bridge.",
    "head": "classifier.",
}


def part_of(name: str) -> str:
    for part, prefix in PARTS.items():
        if part != "projections" and name.startswith(prefix):
            return part
    return "projections"  # vision/text projections and modality embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranges", nargs="+", default=["0.02", "fan_in"], help="floats, or fan_in (the default)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    args = parse_recipe_args(
        ["--output_dir", "/tmp/mmft_init_gradients", "--report_to", "none"],
        "vqa",
        default_config=str(REPO / "recipes" / "configs" / "easy_vqa.yaml"),
    )
    task = get_task("vqa")(args.task)
    splits = task.prepare_data(args.data, max_train_samples=options.batch, max_eval_samples=8)
    print(f"{'initializer_range':>18}  {'loss':>6}  " + "  ".join(f"{part:>12}" for part in PARTS))
    for value in options.ranges:
        torch.manual_seed(options.seed)
        overrides = {} if value == "fan_in" else {"initializer_range": float(value)}
        model, processor = recipe_model(task, args.model, splits, **overrides)
        task.attach(splits, processor)
        batch = task.collator(processor, args.model.max_text_length)([splits.train[i] for i in range(options.batch)])
        model.train()
        loss = model(**batch).loss
        loss.backward()
        squares = dict.fromkeys(PARTS, 0.0)
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                squares[part_of(name)] += parameter.grad.norm().item() ** 2
        print(f"{value:>18}  {loss.item():6.3f}  " + "  ".join(f"{squares[p] ** 0.5:12.3e}" for p in PARTS))


if __name__ == "__main__":
    main()
