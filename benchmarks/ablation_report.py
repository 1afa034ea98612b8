"""Turn the fusion study's JSON results into the docs table (markdown) and plot (PNG).

    python benchmarks/ablation_report.py                                   # outputs/ablation/results.json -> docs/
    python benchmarks/ablation_report.py --results R.json --doc docs/ablation.md --plot docs/ablation.png

The table replaces whatever sits between the `<!-- ablation-table:start -->` / `<!-- ablation-table:end -->`
markers of the doc, so re-running after a new study updates the page in place and leaves the prose alone.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

START, END = "<!-- ablation-table:start -->", "<!-- ablation-table:end -->"
FUSION = {
    "co_attention": "mmft co-attention (both ways)",
    "cross_attention": "mmft cross-attention (text->image)",
    "concat": "mmft concat + MLP (late)",
    "product": "mmft product (late)",
    "vilt": "ViLT, single stream (early)",
    "dual_encoder": "VisionTextDualEncoder + MLP (late)",
}
ACCURACY_KEYS = (
    ("accuracy", "overall"),
    ("accuracy_yes_no", "yes/no"),
    ("accuracy_color", "color"),
    ("accuracy_shape", "shape"),
)


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std; the std is NaN (shown as "n=1") when a single seed has finished."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def _cell(mean: float, std: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} (n=1)" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (variant, max_steps): mean and sample std over seeds, in the order variants first appear."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["variant"], run["max_steps"])].append(run)
    rows = []
    for (variant, steps), members in groups.items():
        row = {"variant": variant, "max_steps": steps, "seeds": sorted(m["seed"] for m in members)}
        for key in [k for k, _ in ACCURACY_KEYS] + ["step_s", "step_cpu_s", "train_s", "wall_s", "eval_s"]:
            values = [m[key] for m in members if key in m]
            row[key] = _mean_std(values) if values else (float("nan"), float("nan"))
        row["parameters"] = members[0]["parameters"]
        row["batch_size"] = members[0]["batch_size"]
        row["eval_questions"] = members[0]["eval_questions"]
        row["train_points"] = [(m["train_s"], {k: m.get(k, float("nan")) for k, _ in ACCURACY_KEYS}) for m in members]
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    columns = [
        "variant",
        "seeds",
        "fusion",
        *(f"{label} acc." for _, label in ACCURACY_KEYS),
        "params total / trainable",
        "step wall (s)",
        "step CPU (s)",
        "train wall (s)",
        "run wall (s)",
    ]
    header = "| " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    best = max(row["accuracy"][0] for row in rows)
    for row in rows:
        cells = []
        for key, _ in ACCURACY_KEYS:
            mean, std = row[key]
            cell = _cell(mean, std)
            cells.append(f"**{cell}**" if key == "accuracy" and mean == best else cell)
        params = row["parameters"]
        lines.append(
            f"| `{row['variant']}` | {len(row['seeds'])} | {FUSION.get(row['variant'], '')} | "
            + " | ".join(cells)
            + f" | {params['total'] / 1e6:.2f}M / {params['trainable'] / 1e6:.2f}M"
            + f" | {_cell(*row['step_s'])} | {row['step_cpu_s'][0]:.3f}"
            + f" | {row['train_s'][0]:.0f} | {row['wall_s'][0]:.0f} |"
        )
    seeds = sorted({s for row in rows for s in row["seeds"]})
    steps = sorted({row["max_steps"] for row in rows})
    lines.append("")
    lines.append(
        f"Mean ± sample std over the finished seeds of {seeds} (n=1: a single seed, no spread); "
        f"{', '.join(map(str, steps))} optimizer steps at batch {rows[0]['batch_size']}; "
        f"test accuracy on {rows[0]['eval_questions']:,} easy-VQA test questions. "
        "Step wall = training wall time / steps (data loading included); step CPU = CPU seconds of the process (all "
        "threads) per step; run wall = build + train + evaluate."
    )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy (overall, and on shape questions, the hard kind) vs training wall time; one colour per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, 2, figsize=(11, 4.6), sharex=True)
    for panel, (key, label) in zip(panels, (("accuracy", "overall"), ("accuracy_shape", "shape questions"))):
        for index, row in enumerate(rows):
            colour = f"C{index}"
            xs, ys = zip(*[(x, y[key]) for x, y in row["train_points"]])
            panel.scatter(xs, ys, color=colour, alpha=0.35, s=18)
            spread = {"xerr": row["train_s"][1], "yerr": row[key][1]} if len(row["seeds"]) > 1 else {}
            panel.errorbar(
                row["train_s"][0], row[key][0], **spread, fmt="o", color=colour, capsize=3, label=row["variant"]
            )
        panel.set_xlabel("training wall time per run (s, 2-core shared CPU)")
        panel.set_ylabel(f"test accuracy, {label}")
        panel.grid(alpha=0.3)
    panels[0].legend(fontsize=8, loc="best")
    budget = f"{rows[0]['max_steps']} steps at batch {rows[0]['batch_size']}"
    figure.suptitle(f"Fusion study on easy-VQA: {budget} (mean ± std over seeds; faint dots: single seeds)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def update_doc(doc: Path, table: str) -> None:
    text = doc.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{doc}: add the markers {START} and {END} where the table goes")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    doc.write_text(f"{before}{START}\n{table}\n{END}{after}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="outputs/ablation/results.json")
    parser.add_argument("--doc", default="docs/ablation.md", help="markdown page with the table markers")
    parser.add_argument("--plot", default="docs/ablation.png")
    args = parser.parse_args(argv)
    payload = json.loads(Path(args.results).read_text())
    rows = summarise(payload["runs"])
    table = markdown_table(rows)
    print(table)
    plot(rows, Path(args.plot))
    if Path(args.doc).is_file():
        update_doc(Path(args.doc), table)
        print(f"\nupdated {args.doc} and {args.plot}")


if __name__ == "__main__":
    main()
