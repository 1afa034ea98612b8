"""`TaskSampler`: which task each optimizer step of a multi-task run trains on, the same on every process.

Three strategies, a registry (`STRATEGIES`) of name -> class:

- `proportional`: task i with probability `p_i ∝ w_i * n_i` (n_i: its training rows, w_i: its weight, 1 by default);
- `temperature`: `p_i ∝ w_i * n_i ** (1 / T)`; T = 1 is `proportional`, a large T tends to `w_i` alone (uniform
  with no weights), which lifts the small tasks;
- `round_robin`: the tasks in turn, in the order given; no sizes, no weights.

Draw k is a pure function of (seed, k): its uniform number comes from a numpy generator seeded by `[seed, k]`, never
from the global RNG. So every process draws the same task at every step with no communication, and the whole
position is the number of draws made (`state_dict()`), which a resume restores bit-exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np


class Strategy:
    """How task probabilities follow from the task sizes and weights, and how draw k picks a task."""

    name: ClassVar[str]

    def __init__(self, temperature: float | None = None) -> None:
        if temperature is not None:
            raise ValueError(f"--task_temperature applies to the temperature strategy only, not to '{self.name}'")

    def probabilities(self, sizes: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The long-run share of steps each task gets (sums to 1)."""
        raise NotImplementedError

    def choose(self, probabilities: np.ndarray, seed: int, k: int) -> int:
        """The index of the task drawn at draw `k`: inverse CDF of a uniform number seeded by (seed, k)."""
        u = np.random.default_rng([seed, k]).random()
        cdf = np.cumsum(probabilities)
        # u * cdf[-1]: the cumulative sum may end a rounding error below 1
        return min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(cdf) - 1)


class Proportional(Strategy):
    """`p_i ∝ w_i * n_i`: every training row is about as likely to be seen as any other."""

    name = "proportional"

    def probabilities(self, sizes: np.ndarray, weights: np.ndarray) -> np.ndarray:
        scores = weights * sizes
        return scores / scores.sum()


class Temperature(Strategy):
    """`p_i ∝ w_i * n_i ** (1 / T)`, T > 0 (T = 1: proportional; T -> inf: the weights alone)."""

    name = "temperature"

    def __init__(self, temperature: float | None = None) -> None:
        if temperature is None or not temperature > 0:
            raise ValueError(f"the temperature strategy needs --task_temperature > 0, got {temperature}")
        self.temperature = float(temperature)

    def probabilities(self, sizes: np.ndarray, weights: np.ndarray) -> np.ndarray:
        # In log space: n ** (1 / T) of a large dataset overflows nothing, and tiny T stays exact.
        logits = np.log(weights) + np.log(sizes) / self.temperature
        scores = np.exp(logits - logits.max())
        return scores / scores.sum()


class RoundRobin(Strategy):
    """The tasks in turn; each gets exactly 1/K of the steps."""

    name = "round_robin"

    def probabilities(self, sizes: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.full(len(sizes), 1.0 / len(sizes))

    def choose(self, probabilities: np.ndarray, seed: int, k: int) -> int:
        return k % len(probabilities)


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Proportional, Temperature, RoundRobin)}


class TaskSampler:
    """Draws one task per call to `draw()`, deterministically from (seed, number of draws so far).

    `sizes`: task name -> number of training rows (the task order is this mapping's order).
    `strategy`: a name in `STRATEGIES`. `temperature`: T of the `temperature` strategy.
    `weights`: task name -> a factor > 0 multiplying that task's share (missing tasks: 1); not with `round_robin`.
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        strategy: str = "proportional",
        *,
        temperature: float | None = None,
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown task sampling strategy '{strategy}'; known: {', '.join(STRATEGIES)}")
        if not sizes:
            raise ValueError("a multi-task run needs at least one task")
        empty = [name for name, size in sizes.items() if int(size) <= 0]
        if empty:
            raise ValueError(
                f"task(s) {', '.join(empty)} have no training rows; give each task a non-empty train split"
            )
        self.tasks: list[str] = list(sizes)
        self.sizes = {name: int(size) for name, size in sizes.items()}
        self.strategy_name, self.temperature, self.seed = strategy, temperature, int(seed)
        self.weights = self._check_weights(weights or {})
        self.strategy = STRATEGIES[strategy](temperature)
        self._probabilities = self.strategy.probabilities(
            np.array([self.sizes[t] for t in self.tasks], dtype=np.float64),
            np.array([self.weights[t] for t in self.tasks], dtype=np.float64),
        )
        self.draws = 0

    def _check_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"task weights name unknown task(s) {', '.join(unknown)}; tasks: {', '.join(self.tasks)}")
        bad = [f"{name}={value}" for name, value in weights.items() if not float(value) > 0]
        if bad:
            raise ValueError(f"task weights must be > 0, got {', '.join(bad)}")
        if weights and self.strategy_name == RoundRobin.name:
            raise ValueError("round_robin takes the tasks in turn and has no task weights; drop them or pick another")
        return {name: float(weights.get(name, 1.0)) for name in self.tasks}

    def probabilities(self) -> dict[str, float]:
        """Each task's long-run share of the draws (for logs and model cards)."""
        return {name: float(p) for name, p in zip(self.tasks, self._probabilities)}

    def peek(self, k: int | None = None) -> str:
        """The task of draw `k` (default: the next one) without drawing it."""
        index = self.strategy.choose(self._probabilities, self.seed, self.draws if k is None else k)
        return self.tasks[index]

    def draw(self) -> str:
        """The next task; advances the sampler by one draw."""
        task = self.peek()
        self.draws += 1
        return task

    def state_dict(self) -> dict[str, Any]:
        """The sampler's position and what it depends on (JSON-serialisable)."""
        return {
            "draws": self.draws,
            "strategy": self.strategy_name,
            "temperature": self.temperature,
            "seed": self.seed,
            "tasks": self.tasks,
            "weights": self.weights,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved position; refuses one saved by another task set, strategy or seed."""
        mine = self.state_dict()
        changed = [key for key in ("strategy", "temperature", "seed", "tasks", "weights") if state[key] != mine[key]]
        if changed:
            details = "; ".join(f"{key}: saved {state[key]!r}, now {mine[key]!r}" for key in changed)
            raise ValueError(
                f"the saved task sampler state belongs to another multi-task setup ({details}). Resume with the "
                "same tasks and sampling flags, or pass --ignore_data_skip true to start the task draws afresh"
            )
        self.draws = int(state["draws"])


def task_draw_counts(sampler: TaskSampler, steps: int, start: int = 0) -> dict[str, int]:
    """How often each task is drawn at draws `start .. start + steps - 1` (the sampler itself does not move)."""
    counts = dict.fromkeys(sampler.tasks, 0)
    for k in range(start, start + steps):
        counts[sampler.peek(k)] += 1
    return counts


__all__ = ["STRATEGIES", "Proportional", "RoundRobin", "Strategy", "TaskSampler", "Temperature", "task_draw_counts"]
