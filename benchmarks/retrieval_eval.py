"""Retrieval evaluation at COCO-test size: 5,000 images x 25,000 captions through the task's own evaluation hook.

A tiny random model (a 1-layer BERT with MiniLM's tokenizer, a timm ResNet stem, a 1-layer bridge of width 32) keeps
the towers cheap, so what is measured is the evaluation itself: embedding every image and caption, ranking both
directions in chunks (`--similarity_chunk_size`), and re-ranking each query's top `--rerank_k` with the matching
head (480,000 pairs at k = 16). Peak memory is the process's maximum resident set (`getrusage`), which includes
Python, torch and the dataset (reported separately, measured before the evaluation). A full similarity matrix
would take 25,000 x 5,000 x 4 bytes = 500 MB on its own; the target is a peak below 2 GiB.

    python benchmarks/retrieval_eval.py [--images 5000] [--captions_per_image 5] [--rerank_k 16]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import tempfile
import time

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
WORDS = (
    "red",
    "blue",
    "green",
    "pink",
    "black",
    "circle",
    "square",
    "star",
    "cross",
    "small",
    "large",
    "left",
    "right",
    "top",
    "bottom",
    "middle",
    "above",
    "below",
    "next",
    "to",
    "a",
    "the",
    "and",
    "with",
)
GIB = 2**30


def peak_rss() -> int:
    """Bytes: the largest resident set this process has had so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synthetic_gallery(images: int, captions_per_image: int, seed: int = 0):
    """`images` 32x32 PNGs of noise and a colour block, each with distinct random captions (10-16 words), in the
    retrieval task's columns: `image`, `captions`, and `row` (the row number a prepared split carries)."""
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    rng = np.random.default_rng(seed)
    pictures, captions = [], []
    for index in range(images):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        pixels[8:24, 8:24] = rng.integers(0, 256, 3)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        pictures.append({"bytes": buffer.getvalue(), "path": None})
        captions.append(
            [f"{index} " + " ".join(rng.choice(WORDS, rng.integers(10, 17))) for _ in range(captions_per_image)]
        )
    features = Features({"image": ImageFeature(), "captions": Sequence(Value("string"))})
    data = Dataset.from_dict({"image": pictures, "captions": captions}, features=features)
    return data.add_column("row", list(range(images)))


def tiny_model_and_processor(folder: str):
    from transformers import AutoModel, AutoTokenizer, BertConfig

    from mmft import MMFTForImageTextRetrieval, MMFTProcessor, resolve_name

    torch.manual_seed(0)
    text = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    AutoModel.from_config(text).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_name("minilm")).save_pretrained(folder)
    cnn = {"features_only": True, "out_indices": [2]}  # stride 8: 32 px -> 4x4 = 16 image tokens
    model = MMFTForImageTextRetrieval.from_vision_text_pretrained(
        vision="timm:resnet10t",
        text=folder,
        vision_model_args=cnn,
        num_bridge_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        hidden_dropout=0.0,
    )
    return model.eval(), MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", folder, 32, cnn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions_per_image", type=int, default=5)
    parser.add_argument("--rerank_k", type=int, default=16)
    parser.add_argument("--similarity_chunk_size", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=256, help="images, captions and re-ranked pairs per batch")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from datasets import Image as ImageFeature
    from transformers import Trainer, TrainingArguments

    from mmft import get_task

    start = time.perf_counter()
    gallery = synthetic_gallery(args.images, args.captions_per_image).cast_column("image", ImageFeature(decode=False))
    with tempfile.TemporaryDirectory() as folder:
        model, processor = tiny_model_and_processor(folder)
        retrieval = get_task("retrieval")
        task = retrieval(
            retrieval.arguments_class(rerank_k=args.rerank_k, similarity_chunk_size=args.similarity_chunk_size)
        )
        data = task.build_targets(gallery.select(range(8)), gallery, None)  # training pairs of 8 images; unused
        task.attach(data, processor)
        training = TrainingArguments(
            output_dir=folder, per_device_eval_batch_size=args.batch_size, use_cpu=True, report_to="none"
        )
        trainer = Trainer(
            model=model, args=training, data_collator=task.collator(processor, 64), processing_class=processor
        )
        setup_seconds, before = time.perf_counter() - start, peak_rss()
        result = task.evaluate(trainer, data)
    metrics = result.metrics
    figures = {
        "images": int(metrics["test_num_images"]),
        "captions": int(metrics["test_num_captions"]),
        "rerank_k": args.rerank_k,
        "pairs_reranked": int((metrics["test_num_images"] + metrics["test_num_captions"]) * args.rerank_k),
        "setup_seconds": round(setup_seconds, 1),
        "evaluation_seconds": round(metrics["test_runtime"], 1),
        "dual_ranking_seconds": round(metrics["test_dual_seconds"], 1),
        "rerank_seconds": round(metrics.get("test_rerank_seconds", 0.0), 1),
        "peak_rss_before_evaluation_gib": round(before / GIB, 3),
        "peak_rss_gib": round(peak_rss() / GIB, 3),
        "full_similarity_matrix_gib": round(metrics["test_num_images"] * metrics["test_num_captions"] * 4 / GIB, 3),
        "threads": args.threads,
    }
    print(json.dumps(figures, indent=1))
    verdict = "PASS" if figures["peak_rss_gib"] < 2.0 else "FAIL"
    print(f"peak memory {figures['peak_rss_gib']:.2f} GiB (target < 2 GiB): {verdict}")


if __name__ == "__main__":
    main()
