"""Which eval rows a task scores: every row but those rejected as unreadable (`--on_bad_example skip`).

A row whose image only fails while decoding keeps a blank image, so predictions stay aligned with the references
(`mmft.data.collator`); every task leaves it out of its metrics the same way and reports how many it left out as
`excluded_bad_rows` (with the task's prefix: `test_excluded_bad_rows`). The positions come from the policy's ledger,
which every DataLoader worker and process appends to (`mmft.data.rejects`), so read them once every process has
decoded its rows (after the gather).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..data.collator import excluded_eval_positions
from ..data.rejects import BadExamplePolicy

EXCLUDED_KEY = "excluded_bad_rows"


@dataclass(frozen=True)
class ScoredRows:
    """The positions 0..count-1 of an eval split, less `excluded`."""

    count: int
    excluded: frozenset[int] = frozenset()

    @property
    def keep(self) -> list[int]:
        return [i for i in range(self.count) if i not in self.excluded]

    def select(self, values: Sequence[Any]) -> list[Any]:
        """The scored entries of per-row `values` (all of them when nothing is excluded)."""
        return list(values) if not self.excluded else [values[i] for i in self.keep]

    def report(self, metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
        """`metrics` with `<prefix>excluded_bad_rows` added when any row was left out (`prefix` e.g. "test_")."""
        return {**metrics, f"{prefix}{EXCLUDED_KEY}": float(len(self.excluded))} if self.excluded else metrics


def scored_rows(count: int, excluded: set[int] | Callable[[], set[int]] | None = None) -> ScoredRows:
    """The rows to score of `count`, leaving out `excluded` positions (or what `excluded()` gives)."""
    positions = excluded() if callable(excluded) else excluded
    return ScoredRows(count, frozenset(positions or ()))


def scored_split_rows(policy: BadExamplePolicy | None, rows: list[int], split: str = "eval") -> ScoredRows:
    """The rows to score of a held-out split whose `row` column is `rows`, as evaluated under the name `split`."""
    return scored_rows(len(rows), excluded_eval_positions(policy, rows, split))


__all__ = ["EXCLUDED_KEY", "ScoredRows", "scored_rows", "scored_split_rows"]
