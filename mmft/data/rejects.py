"""The bad-example policy (`--on_bad_example raise|skip`) and its ledger of skipped rows, `rejects.jsonl`.

`raise` (the default) stops at the first bad row with its split, row index, file and reason. `skip` logs the row,
appends it to the ledger and goes on, unless more than `max_bad_fraction` of a split is bad: then the data, not a
few files, is broken (a wrong image folder, a wrong column) and the run stops. The ledger is a JSON-lines file that
DataLoader workers and DDP ranks append to, so it is also how the skips of every process are counted.

Each line is tagged with the run it belongs to (`run`: a digest of the run's flag fingerprint, `mmft.fingerprint`).
A fresh run starts a new ledger; a resumed run keeps only its own lines, so an older run's rejects neither count
toward `max_bad_fraction` nor exclude eval rows. A line a kill cut short (lines are appended whole, so only the
last one can be) is ignored, the next append starts on a new line, and a resumed run drops it when it tidies the
ledger.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields, replace

from ..atomic import atomic_write_text
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
    run: str | None = None  # the run that found it (`BadExamplePolicy.run`)

    def describe(self, source: str) -> str:
        where = f"{source}, split {self.split!r}, row {self.row}" + (f", file {self.file}" if self.file else "")
        return f"{where}: {self.reason}"


@dataclass
class BadExamplePolicy:
    """What to do with a bad row. Picklable (a mode, a threshold and a file path), so it travels to DataLoader
    workers."""

    mode: str = "raise"
    max_bad_fraction: float = 0.05
    rejects_file: str | None = None
    source: str = "dataset"
    split_sizes: dict[str, int] = field(default_factory=dict)
    _memory: dict[tuple[str, int], BadExample] = field(default_factory=dict, repr=False)
    run: str | None = None  # this run's tag; ledger lines of other runs are ignored

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
        self._append("".join(self._line(b) for b in new))

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
        self._append(self._line(bad))
        return True

    def _line(self, bad: BadExample) -> str:
        return json.dumps(asdict(replace(bad, run=self.run))) + "\n"

    def _ledger(self) -> list[BadExample]:
        """This run's ledger entries. A line cut short by a kill is skipped (appends after it start a new line)."""
        with open(self.rejects_file, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
        known = {f.name for f in fields(BadExample)}
        entries, torn = [], 0
        for line in lines:
            try:
                record = json.loads(line) if line.strip() else None
                entry = BadExample(**{k: v for k, v in record.items() if k in known}) if record else None
            except (ValueError, TypeError, AttributeError):
                torn += 1
                continue
            if entry is not None and entry.run == self.run:
                entries.append(entry)
        if torn:
            logger.debug("%s: %d line(s) cut short by a kill ignored", self.rejects_file, torn)
        return entries

    def _append(self, text: str) -> None:
        """Append whole lines; after a line a kill cut short, start on a new line rather than glue onto it."""
        os.makedirs(os.path.dirname(os.path.abspath(self.rejects_file)), exist_ok=True)
        with open(self.rejects_file, "a+b") as handle:
            end, torn = handle.seek(0, os.SEEK_END), False
            if end:
                handle.seek(end - 1)
                torn = handle.read(1) != b"\n"
            # One short write() per call in append mode: lines from several workers/ranks do not interleave.
            handle.write((("\n" if torn else "") + text).encode("utf-8"))

    def keep_own_lines(self) -> None:
        """Rewrite the ledger with only this run's whole lines (call once, in the main process, when resuming)."""
        if not (self.rejects_file and os.path.exists(self.rejects_file)):
            return
        own = self._ledger()
        atomic_write_text(self.rejects_file, "".join(self._line(b) for b in own))

    def rejected(self, split: str) -> dict[int, BadExample]:
        """Distinct rejected rows of `split`, by row index, as recorded by every process of this run."""
        entries = list(self._memory.values())
        if self.rejects_file and os.path.exists(self.rejects_file):
            entries = self._ledger()
        return {b.row: b for b in entries if b.split == split}

    def summary(self) -> str:
        """One line with the exact number of skipped rows per split, for the end of a run."""
        parts = [f"{split}: {len(self.rejected(split))} of {n}" for split, n in self.split_sizes.items()]
        where = f"; listed in {self.rejects_file}" if self.rejects_file else ""
        return f"--on_bad_example {self.mode}: skipped rows ({', '.join(parts)}){where}"
