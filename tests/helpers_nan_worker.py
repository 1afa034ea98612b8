"""One process of a 2-process DDP run (`torchrun`, gloo on the CPU) whose loss turns NaN on one rank only.

The HF Trainer with mmft's `NonFiniteLossGuard` trains a tiny model; from step 3 on, the rank given by
`--poison_rank` gets NaN pixels. Each rank writes how its run ended (the exception, or "finished") to
`--out/rank<r>.txt`, for tests/test_robustness_run.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from conftest import IMAGE_SIZE, tiny_model  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from mmft.guards import NonFiniteLossGuard  # noqa: E402

ROWS, BATCH = 16, 2


class RankPoisonedRows(torch.utils.data.Dataset):
    """Fixed random rows; on `poison_rank`, every fetch after the first `clean` ones returns NaN pixels."""

    def __init__(self, poison_rank: int, clean: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.pixels = torch.randn(ROWS, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        self.ids = torch.randint(1000, 2000, (ROWS, 6), generator=generator)
        self.poison_rank, self.clean, self.fetched = poison_rank, clean, 0

    def __len__(self) -> int:
        return ROWS

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self.fetched += 1
        poisoned = dist.get_rank() == self.poison_rank and self.fetched > self.clean
        pixels = torch.full_like(self.pixels[i], float("nan")) if poisoned else self.pixels[i]
        return {
            "pixel_values": pixels,
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(6, dtype=torch.long),
            "labels": torch.tensor(i % 4),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--poison_rank", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    training = TrainingArguments(
        str(Path(args.out) / "run"),
        per_device_train_batch_size=BATCH,
        max_steps=6,
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        learning_rate=1e-3,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=tiny_model(),
        args=training,
        train_dataset=RankPoisonedRows(args.poison_rank, 2 * BATCH),
        callbacks=[NonFiniteLossGuard()],
    )
    try:
        trainer.train()
        ending = "finished"
    except Exception as error:  # noqa: BLE001 (the test compares what each rank saw)
        ending = f"{type(error).__name__}: {error}"
    Path(args.out, f"rank{dist.get_rank()}.txt").write_text(ending)
    sys.exit(0 if ending == "finished" else 1)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
