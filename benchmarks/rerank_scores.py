"""Which re-ranking score suits a trained retrieval model: Recall@K of the dual encoder and of every rule in
`mmft.RERANK_SCORES`, on the same test images and captions.

Each rule is one evaluation of the saved model through the retrieval recipe's own path (`mmft.training.run` with
`--eval_only` and `--rerank_score RULE`): the same images and captions embedded the same way and the same top
`--rerank_k` candidates re-ranked, so the rows differ only in how a candidate is scored.

    python benchmarks/rerank_scores.py outputs/scenes_retrieval [--images 400] [--rerank_k 16]

Data: the offline scenes test split (its first `--images` images, five captions each). Choose a rule on a validation
split, not on the split you report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmft import RERANK_SCORES, parse_recipe_args  # noqa: E402
from mmft.training import run  # noqa: E402


def evaluate(options: argparse.Namespace, rule: str) -> dict[str, float]:
    """The test metrics of the saved model re-ranked by `rule` (the recipe's outputs go to a scratch folder)."""
    with tempfile.TemporaryDirectory(prefix="mmft_rerank_") as output_dir:
        flags = [
            "--model_name_or_path",
            options.model,
            "--eval_only",
            "true",
            "--rerank_score",
            rule,
            "--rerank_k",
            str(options.rerank_k),
            "--max_eval_samples",
            str(options.images),
            "--max_train_samples",
            "1",
            "--per_device_eval_batch_size",
            str(options.batch_size),
            "--max_text_length",
            str(options.max_length),
            "--output_dir",
            output_dir,
            "--report_to",
            "none",
            "--plots",
            "false",
            "--model_card",
            "false",
            "--throughput",
            "false",
        ]
        return run("retrieval", parse_recipe_args(flags, "retrieval"))


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a saved mmft retrieval folder")
    parser.add_argument("--images", type=int, default=400, help="first N scenes test images (5 captions each)")
    parser.add_argument("--rerank_k", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=200)
    parser.add_argument("--max_length", type=int, default=32, help="caption tokens, as the model was trained")
    options = parser.parse_args(argv)

    results = {}
    for rule in RERANK_SCORES:
        metrics = evaluate(options, rule)
        results.setdefault(
            "dual",
            {
                k.removeprefix("test_dual_"): v
                for k, v in metrics.items()
                if k.startswith("test_dual_") and "recall" in k
            },
        )
        results[rule] = {
            k.removeprefix("test_rerank_"): v
            for k, v in metrics.items()
            if k.startswith("test_rerank_") and "recall" in k
        }
    print(
        f"{int(metrics['test_num_images'])} test images, {int(metrics['test_num_captions'])} captions, "
        f"top {options.rerank_k} re-ranked"
    )
    print("stage\tt2i R@1\ti2t R@1")
    for stage, row in results.items():
        print(f"{stage}\t{row['t2i_recall@1']:.4f}\t{row['i2t_recall@1']:.4f}")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
