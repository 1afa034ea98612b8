"""Training-loss curves of several runs in one PNG, read from their logs (what a recipe prints) or trainer_state.json.

    python benchmarks/loss_curves.py A.log B/checkpoint-1806/trainer_state.json \
        --labels "resnet10t from scratch (stalled)" "EfficientNet-Lite0 (cured)" --hline 0.229 --out docs/x.png

The x axis is the epoch. `--hline` draws a reference level (e.g. a plateau's predicted loss).
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def loss_points(path: Path) -> tuple[list[float], list[float]]:
    """(epochs, losses) of the training logs in a trainer_state.json or a recipe's printed log."""
    if path.suffix == ".json":
        rows = json.loads(path.read_text())["log_history"]
    else:
        rows = []
        for chunk in path.read_text(errors="replace").replace("\r", "\n").split("{")[1:]:
            text = "{" + chunk.split("}")[0] + "}"
            if "'loss'" in text:
                try:
                    rows.append(ast.literal_eval(text))
                except (ValueError, SyntaxError):
                    continue
    points = [(float(r["epoch"]), float(r["loss"])) for r in rows if "loss" in r and "epoch" in r]
    return [e for e, _ in points], [v for _, v in points]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+")
    parser.add_argument("--hline", type=float, help="a reference loss level")
    parser.add_argument("--hline_label", default="reference")
    parser.add_argument("--title", default="training loss")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for path, label in zip(args.runs, args.labels or [str(p) for p in args.runs]):
        epochs, losses = loss_points(path)
        axes.plot(epochs, losses, marker="o", markersize=3, label=label)
    if args.hline is not None:
        axes.axhline(args.hline, color="grey", linestyle="--", linewidth=1, label=args.hline_label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("training loss")
    axes.set_yscale("log")
    axes.set_title(args.title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
