"""Benchmark 2: data pipeline headroom = loader samples/s / training-step samples/s, at the default preset.

The loader is the Trainer's own DataLoader from the recipe (decode + image transform + labels + tokenising
collator, the preset's `dataloader_num_workers`); the consumer is a compute-only training step of the recipe's model
on batches already in memory. The two alternate batch by batch in one process. Headroom >= 2 means the model,
not the data, sets the pace, with room to spare. A per-stage split of one batch says where loader time goes.

    python benchmarks/data_pipeline.py [--rounds 20] [--dataloader_num_workers 2]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from harness import HandStep, median, synchronize, to_device
from recipe_parts import capture_recipe


def stage_split(dataset, collator, batch_size: int) -> dict[str, float]:
    """Seconds for one batch in each pipeline stage: image decode, image processor, whole transform, collate."""
    from mmft.data import decode_image

    transform = dataset.format["format_kwargs"]["transform"]  # the recipe's VQATransform
    raw = dataset.with_format(None)[:batch_size]
    start = time.perf_counter()
    images = [decode_image(image, "benchmark") for image in raw["image"]]
    decoded = time.perf_counter()
    transform.image_processor(images, return_tensors="pt")
    processed = time.perf_counter()
    rows = dataset.__getitems__(list(range(batch_size)))  # decode + processor + labels, as the DataLoader calls it
    transformed = time.perf_counter()
    collator(rows)
    collated = time.perf_counter()
    return {
        "decode_s": decoded - start,
        "image_processor_s": processed - decoded,
        "transform_s": transformed - processed,
        "collate_s": collated - transformed,
    }


def _forever(loader):
    while True:
        yield from loader


def run(rounds: int = 20, warmup: int = 2, device: str = "cpu", quick: bool = False, *recipe_flags: str) -> dict:
    """Alternate one timed loader block and one timed compute block per round; medians of each."""
    parts = capture_recipe(device, quick, *recipe_flags)
    loader, args = parts.train_dataloader, parts.args
    workers = args.dataloader_num_workers
    batches = _forever(loader)
    # With workers, batches prefetched while the model computed are drawn untimed before each loader block.
    prefetched = workers * (args.dataloader_prefetch_factor or 2)
    block = 1 if workers == 0 else 2 * prefetched
    step = HandStep(copy.deepcopy(parts.model), device)
    in_memory = [to_device(next(batches), device) for _ in range(2)]
    loader_times, step_times = [], []
    for round_index in range(warmup + rounds):
        for _ in range(prefetched):
            next(batches)
        start = time.perf_counter()
        for _ in range(block):
            next(batches)
        loaded = time.perf_counter()
        for i in range(block):
            step(in_memory[i % 2])
        synchronize(device)
        if round_index >= warmup:
            loader_times.append(loaded - start)
            step_times.append(time.perf_counter() - loaded)
    batch_size = in_memory[0]["pixel_values"].shape[0]
    loader_rate = batch_size * block / median(loader_times)
    step_rate = batch_size * block / median(step_times)
    split = stage_split(loader.dataset, loader.collate_fn, batch_size)
    return {
        "batch_size": batch_size,
        "dataloader_num_workers": workers,
        "loader_samples_per_s": loader_rate,
        "step_samples_per_s": step_rate,
        "headroom": loader_rate / step_rate,
        **{f"split_{key}": value for key, value in split.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dataloader_num_workers", type=int, default=None, help="override the preset's value")
    options = parser.parse_args()
    workers = options.dataloader_num_workers
    flags = [] if workers is None else ["--dataloader_num_workers", str(workers)]
    result = run(options.rounds, 2, options.device, options.quick, *flags)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"data_headroom={result['headroom']:.2f}")


if __name__ == "__main__":
    main()
