"""The bad-example policy (`--on_bad_example raise|skip`) and its ledger of skipped rows, `rejects.jsonl`.

`raise` (the default) stops at the first bad row with its split, row index, file and reason. `skip` logs the row,
appends it to the ledger and goes on, unless more than `max_bad_fraction` of a split is bad: then the data, not a
few files, is broken (a wrong image folder, a wrong column) and the run stops. The ledger is a JSON-lines file that
DataLoader workers and DDP ranks append to, so it is also how the skips of every process are counted.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field

from .sources import DataError

logger = logging.getLogger(__name__)

POLICIES = ("raise", "skip")


@dataclass
class BadExample:
    """One unusable row: where it is and why. `stage` is "validation" (before training) or "decode" (during)."""

    split: str
    row: int | str  # a streamed row is named by its sample key (shard/key), not a number
    file: str | None
    reason: str
    stage: str = "validation"

    def describe(self, source: str) -> str:
        where = f"{source}, split {self.split!r}, row {self.row}" + (f", file {self.file}" if self.file else "")
        return f"{where}: {self.reason}"


@dataclass
class BadExamplePolicy:
    """What to do with a bad row. Picklable (a mode, a threshold and a file path), so it travels to DataLoader workers."""

    mode: str = "raise"
    max_bad_fraction: float = 0.05
    rejects_file: str | None = None
    source: str = "dataset"
    split_sizes: dict[str, int] = field(default_factory=dict)
    _memory: dict[tuple[str, int], BadExample] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in POLICIES:
            raise ValueError(f"on_bad_example={self.mode!r}; choose one of {', '.join(POLICIES)}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")

    def reset(self) -> None:
        """Start a fresh ledger (call once, in the main process, before any row is checked)."""
        if self.rejects_file and os.path.exists(self.rejects_file):
            os.remove(self.rejects_file)
        self._memory.clear()

    def handle(self, bad: BadExample) -> None:
        """`raise`: a `DataError`. `skip`: log, record, and stop if the split's bad fraction is over the limit."""
        if self.mode == "raise":
            raise DataError(f"{bad.describe(self.source)}. Fix or remove the row, or pass --on_bad_example skip")
        if self._record(bad):
            logger.warning("skipping %s", bad.describe(self.source))
        self.check_fraction(bad.split)

    def skip_all(self, bad: list[BadExample]) -> None:
        """Log and record many rows at once (the pre-training pass): one ledger write, not one per row."""
        known = {(b.split, b.row) for split in {b.split for b in bad} for b in self.rejected(split).values()}
        new = [b for b in bad if (b.split, b.row) not in known]
        for example in new:
            logger.warning("skipping %s", example.describe(self.source))
        if not self.rejects_file:
            self._memory.update(((b.split, b.row), b) for b in new)
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.rejects_file)), exist_ok=True)
        with open(self.rejects_file, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(asdict(b)) + "\n" for b in new))

    def check_fraction(self, split: str) -> None:
        total = self.split_sizes.get(split)
        rejected = self.rejected(split)
        if total and len(rejected) > self.max_bad_fraction * total:
            examples = "; ".join(b.describe(self.source) for b in list(rejected.values())[:3])
            raise DataError(
                f"{len(rejected)} of {total} rows of split {split!r} are bad ({len(rejected) / total:.1%}), more than "
                f"--max_bad_fraction {self.max_bad_fraction}; that points at the data, not a few files (wrong folder, "
                f"column or format?). First ones: {examples}"
                + (f". All listed in {self.rejects_file}" if self.rejects_file else "")
            )

    def _record(self, bad: BadExample) -> bool:
        """Add `bad` to the ledger; False when that row was already there (seen in an earlier epoch or process)."""
        if bad.row in self.rejected(bad.split):
            return False
        if not self.rejects_file:
            self._memory[(bad.split, bad.row)] = bad
            return True
        os.makedirs(os.path.dirname(os.path.abspath(self.rejects_file)), exist_ok=True)
        # One short write() per line in append mode: lines from several workers/ranks do not interleave.
        with open(self.rejects_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(bad)) + "\n")
        return True

    def rejected(self, split: str) -> dict[int, BadExample]:
        """Distinct rejected rows of `split`, by row index, as recorded by every process."""
        entries = list(self._memory.values())
        if self.rejects_file and os.path.exists(self.rejects_file):
            with open(self.rejects_file, encoding="utf-8") as handle:
                entries = [BadExample(**json.loads(line)) for line in handle if line.strip()]
        return {b.row: b for b in entries if b.split == split}

    def summary(self) -> str:
        """One line with the exact number of skipped rows per split, for the end of a run."""
        parts = [f"{split}: {len(self.rejected(split))} of {n}" for split, n in self.split_sizes.items()]
        where = f"; listed in {self.rejects_file}" if self.rejects_file else ""
        return f"--on_bad_example {self.mode}: skipped rows ({', '.join(parts)}){where}"
