"""The two answer baselines of the scenes conversations (most frequent answer per question type, nearest training
image's answer), scored per question type: the figures a generative VQA model trained on them must beat.

    python benchmarks/scenes_conversation_baselines.py [--num_train 6000] [--num_test 1000] [--seed 0] [--out F.json]

Prints a markdown table (docs/scenes_conversations.md holds the one at the defaults) and writes every score to
--out as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

from datasets import Image

from mmft.data.scenes_conversations import QUESTIONS, load_scenes_conversations
from mmft.tasks.generative_vqa.baselines import baseline_scores

COLUMNS = ("exact_match", "bleu_1", "cider", "rouge_l")


def table(scores: dict[str, dict]) -> str:
    """Rows: all turns, then each question type; per baseline: exact match (= VQA accuracy here), BLEU-1, CIDEr-D,
    ROUGE-L."""
    names = list(scores)
    header = ["question type", "turns"] + [f"{name} {column}" for name in names for column in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind in ["all", *(kind for kind in QUESTIONS if kind in scores[names[0]])]:
        cells = [kind, str(scores[names[0]][kind]["turns"])]
        cells += [f"{scores[name][kind][column]:.3f}" for name in names for column in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_train", type=int, default=6000)
    parser.add_argument("--num_test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="scenes_conversation_baselines.json")
    args = parser.parse_args()
    start = time.perf_counter()
    data = load_scenes_conversations(num_train=args.num_train, num_test=args.num_test, seed=args.seed)
    data = data.cast_column("image", Image(decode=False))  # the baselines open the PNG bytes themselves
    scores, _ = baseline_scores(data["train"], data["test"])
    print(table(scores))
    seconds = time.perf_counter() - start
    print(f"\n{args.num_train} train and {args.num_test} test images, seed {args.seed}; {seconds:.0f} s")
    with open(args.out, "w") as file:
        json.dump({"arguments": vars(args), "scores": scores}, file, indent=1)


if __name__ == "__main__":
    main()
