"""Evaluation metrics shipped inside mmft, loadable offline by local path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # evaluate is heavy; only load_metric needs it at runtime
    import evaluate

__all__ = ["available_metrics", "load_metric"]

_METRICS_DIR = Path(__file__).parent


def available_metrics() -> list[str]:
    """Names of the metric folders here (``<name>/<name>.py``, evaluate's layout)."""
    return sorted(p.name for p in _METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def load_metric(name: str = "vqa_accuracy", **kwargs: Any) -> evaluate.EvaluationModule:
    """Load a metric shipped inside mmft by local path (no Hub access).

    ``kwargs`` go to :func:`evaluate.load` (e.g. ``keep_in_memory=True``,
    ``cache_dir=...``). An absolute path to an existing ``<name>/<name>.py``
    makes evaluate take its local-file branch, which never contacts the Hub, so
    this works with or without ``HF_HUB_OFFLINE`` / ``HF_EVALUATE_OFFLINE``.
    """
    known = available_metrics()
    # Checking against the listing (not just the filesystem) also rejects
    # names such as "../x" that would escape this folder.
    if name not in known:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(known)}")
    import evaluate

    return evaluate.load(str(_METRICS_DIR / name), **kwargs)
