"""Which re-ranking score suits a trained retrieval model: Recall@K of the dual encoder and of every rule in
`mmft.rerank.RERANK_SCORES`, on the same embedded test images and captions.

The gallery is embedded once; each rule then re-ranks the same top `--rerank_k` candidates through the library's own
evaluation (`mmft.retrieval_eval.evaluate_retrieval`), so the rows differ only in how a candidate is scored.

    python benchmarks/rerank_scores.py outputs/scenes_retrieval [--images 400] [--rerank_k 16]

Data: the offline scenes test split (its first `--images` images, five captions each). Choose a rule on a validation
split, not on the split you report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmft import AutoModelForImageTextRetrieval, MMFTProcessor  # noqa: E402
from mmft.data.scenes import load_scenes  # noqa: E402
from mmft.rerank import RERANK_SCORES  # noqa: E402
from mmft.retrieval_eval import embed_images, embed_texts, evaluate_retrieval  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a saved mmft retrieval folder")
    parser.add_argument("--images", type=int, default=400, help="first N scenes test images (5 captions each)")
    parser.add_argument("--rerank_k", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=200)
    parser.add_argument("--max_length", type=int, default=32, help="caption tokens, as the model was trained")
    options = parser.parse_args(argv)

    model = AutoModelForImageTextRetrieval.from_pretrained(options.model).eval()
    processor = MMFTProcessor.from_pretrained(options.model)
    test = load_scenes()["test"].select(range(options.images))
    device = torch.device("cpu")
    pixels = [{"pixel_values": processor(images=row["image"].convert("RGB"))["pixel_values"][0]} for row in test]
    texts = [caption for group in test["captions"] for caption in group]
    owners = [index for index, group in enumerate(test["captions"]) for _ in group]
    tokenize = lambda batch: processor(text=batch, max_length=options.max_length, return_tensors="pt")  # noqa: E731
    results = {}
    with torch.inference_mode():
        images = embed_images(model, pixels, options.batch_size, device)
        captions = embed_texts(model, texts, tokenize, options.batch_size, device)
        for rule in RERANK_SCORES:
            model.config.rerank_score = rule
            metrics = evaluate_retrieval(model, images, captions, owners, options.rerank_k, options.batch_size,
                                         device).metrics  # fmt: skip
            results.setdefault("dual", {k.removeprefix("test_dual_"): v for k, v in metrics.items()
                                        if k.startswith("test_dual_") and "recall" in k})  # fmt: skip
            results[rule] = {k.removeprefix("test_rerank_"): v for k, v in metrics.items()
                             if k.startswith("test_rerank_") and "recall" in k}  # fmt: skip
    print(f"{options.images} test images, {len(texts)} captions, top {options.rerank_k} re-ranked")
    print("stage\tt2i R@1\ti2t R@1")
    for stage, row in results.items():
        print(f"{stage}\t{row['t2i_recall@1']:.4f}\t{row['i2t_recall@1']:.4f}")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
