"""`make bench`: every mmft benchmark in one run, then a table of measured ratios beside their targets.

    python benchmarks/run_all.py                      # CPU: ~10 minutes on a 2-core machine
    python benchmarks/run_all.py --quick              # smoke run: tiny step counts, figures meaningless
    python benchmarks/run_all.py --large              # + ViT-B/16 + BERT-base + 6-layer co-attention (CPU: memory only)
    python benchmarks/run_all.py --device cuda --large    # on a GPU: the issue's targets (bf16)
    python benchmarks/run_all.py --only overhead,data    # a subset: overhead, data, plans, mfu, scaling

Writes results.json, results.md and scaling.png under --out. Exits 0 whether or not a target is met; the table
says which are. The last line is `overhead_ratio=X`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from harness import REPO, machine_description, mib  # noqa: E402


@dataclass
class Row:
    benchmark: str
    metric: str
    value: str
    target: str = "-"
    verdict: str = "info"


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def stage_overhead(o) -> tuple[list[Row], dict]:
    import overhead

    result = overhead.run(*((4, 1) if o.quick else (40, 5)), device=o.device, quick=o.quick)
    limit = 1.03 if o.gpu else 1.05
    ratio = result["overhead_ratio"]
    rows = [
        Row(
            "1 overhead",
            "Trainer / hand loop, median step (same clipping + schedule)",
            f"{ratio:.3f}",
            f"<= {limit}",
            _verdict(ratio <= limit),
        ),
        Row("1 overhead", "  same, mean step (includes periodic logging)", f"{result['overhead_ratio_mean']:.3f}"),
        Row(
            "1 overhead", "  vs a hand loop without grad clipping", f"{result['overhead_ratio_vs_unclipped_loop']:.3f}"
        ),
        Row(
            "1 overhead",
            "  step times: Trainer / hand / of which clipping",
            f"{result['trainer_step_s'] * 1e3:.0f} / {result['hand_step_s'] * 1e3:.0f} / "
            f"{result['clip_s'] * 1e3:.1f} ms",
        ),
    ]
    return rows, result


def stage_data(o) -> tuple[list[Row], dict]:
    import data_pipeline

    result = data_pipeline.run(3 if o.quick else 20, 1 if o.quick else 2, o.device, o.quick)
    headroom = result["headroom"]
    split = ", ".join(
        f"{k.removeprefix('split_').removesuffix('_s')} {v * 1e3:.0f}"
        for k, v in result.items()
        if k.startswith("split_")
    )
    rows = [
        Row(
            "2 data",
            f"loader / training step samples/s (workers={result['dataloader_num_workers']})",
            f"{headroom:.1f}",
            ">= 2.0",
            _verdict(headroom >= 2.0),
        ),
        Row(
            "2 data",
            "  loader, step samples/s",
            f"{result['loader_samples_per_s']:.0f}, {result['step_samples_per_s']:.0f}",
        ),
        Row("2 data", f"  one batch of {result['batch_size']}, ms", split),
    ]
    return rows, result


def stage_plans(o) -> tuple[list[Row], dict]:
    import plans

    results = {}
    rows: list[Row] = []
    configs = [("tiny", 2, True)] if o.quick else [("small", 16, True)]
    if o.large:
        configs.append(("base", 32, True) if o.gpu else ("base", 2, False))  # CPU: memory only, a small batch
    for model_name, batch, timed in configs:
        result = plans.run(
            model_name,
            batch,
            1 if o.quick else 8,
            1 if o.quick else 2,
            o.device,
            1 if o.quick else 3,
            timed,
            quick=o.quick,
        )
        results[f"{model_name}_b{batch}"] = result
        is_target = o.gpu and model_name == "base" and batch == 32
        for plan, row in result["plans"].items():
            trained = row["vision"] + row["text"] + row["bridge+head"]
            memory = (
                f"peak {mib(row['device_peak'])} ({row['device_peak_vs_full']:.2f}x full)"
                if o.gpu
                else f"peak RSS {mib(row['peak_rss'])} ({row['peak_rss_vs_full']:.2f}x), above imports "
                f"{mib(row['training_rss'])} ({row['training_rss_vs_full']:.2f}x full)"
            )
            timing = f"; step {row['step_s'] * 1e3:.0f} ms ({row['step_vs_full']:.2f}x)" if "step_s" in row else ""
            ratio = row.get("device_peak_vs_full") if o.gpu else row["training_rss_vs_full"]
            target, verdict = (
                ("<= 0.7x full", _verdict(ratio <= 0.7)) if plan == "lora" and is_target else ("-", "info")
            )
            rows.append(
                Row(
                    f"3 plans {model_name} b{batch}",
                    f"{plan}: {trained / 1e6:.2f}M trainable",
                    memory + timing,
                    target,
                    verdict,
                )
            )
    return rows, results


def stage_mfu(o) -> tuple[list[Row], dict]:
    import mfu

    cases = [("preset", "", 0), ("tiny", "full", 2) if o.quick else ("small", "full", 16)]
    if o.large and o.gpu:
        cases.append(("base", "full", 64))
    results = mfu.run(cases, o.device, 1 if o.quick else 6, 1, o.quick)
    rows = []
    for result in results:
        is_target = o.gpu and result["config"].startswith("base")
        target, verdict = (">= 0.40", _verdict(result["mfu"] >= 0.40)) if is_target else ("-", "info")
        rows.append(
            Row(
                "4 MFU",
                f"{result['config']}, batch {result['batch_size']}",
                f"{result['mfu']:.3f} ({result['flops_per_step'] / 1e9:.1f} GFLOP/step, "
                f"{result['achieved_flops'] / 1e9:.1f} of {result['peak_flops'] / 1e9:.0f} GFLOP/s)",
                target,
                verdict,
            )
        )
    return rows, {"cases": results}


def stage_scaling(o) -> tuple[list[Row], dict]:
    import scaling

    points = scaling.run(o.device, 1 if o.quick else 3, 1, o.quick)
    scaling.plot(points, os.path.join(o.out, "scaling.png"))
    rows = []
    for axis in dict.fromkeys(point["axis"] for point in points):
        line = [point for point in points if point["axis"] == axis]
        growth = ", ".join(f"{p['time_growth']:.2f}/{p['activation_growth']:.2f}" for p in line[1:])
        values = "/".join(str(p["value"]) for p in line)
        times = "/".join(f"{p['step_s'] * 1e3:.0f}" for p in line)
        rows.append(Row("5 scaling", f"{axis} {values}: step ms {times}", f"growth time/act.mem {growth}"))
    return rows, {"points": points}


STAGES = {
    "overhead": stage_overhead,
    "data": stage_data,
    "plans": stage_plans,
    "mfu": stage_mfu,
    "scaling": stage_scaling,
}


def markdown(rows: list[Row]) -> str:
    lines = ["| benchmark | metric | measured | target | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {r.benchmark} | {r.metric.strip()} | {r.value} | {r.target} | {r.verdict} |" for r in rows]
    return "\n".join(lines)


def write_results(out: str, header: dict, rows: list[Row], raw: dict) -> None:
    with open(os.path.join(out, "results.json"), "w") as handle:
        json.dump({**header, "rows": [asdict(r) for r in rows], "raw": raw}, handle, indent=1, default=str)
    with open(os.path.join(out, "results.md"), "w") as handle:
        handle.write("\n".join(f"- {k}: {v}" for k, v in header.items()) + "\n\n" + markdown(rows) + "\n")


def print_table(rows: list[Row]) -> None:
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("benchmark", "metric", "value", "target")]
    for r in rows:
        cells = (r.benchmark, r.metric, r.value, r.target)
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + r.verdict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps of each, figures meaningless")
    parser.add_argument("--large", action="store_true", help="add the ViT-B/16 + BERT-base + 6-layer bridge model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}")
    parser.add_argument("--out", default=os.path.join(REPO, "outputs", "benchmarks"))
    options = parser.parse_args()
    options.gpu = options.device.startswith("cuda")
    unknown = set(options.only.split(",")) - set(STAGES)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(STAGES)}")
    os.makedirs(options.out, exist_ok=True)
    started = time.time()
    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(options.device),
        "command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
        "quick": options.quick,
    }
    rows: list[Row] = []
    raw: dict = {}
    for name in options.only.split(","):
        stage_start = time.time()
        stage_rows, raw[name] = STAGES[name](options)
        rows += stage_rows
        header["wall_s"] = round(time.time() - started)
        write_results(options.out, header, rows, raw)  # after every stage: a later failure keeps earlier figures
        print(f"[bench] {name} done in {time.time() - stage_start:.0f} s", flush=True)
    print(
        f"\nmmft benchmarks, {header['date']}, {header['machine']}, {header['wall_s']} s"
        + (" (QUICK: smoke figures only)" if options.quick else "")
    )
    print_table(rows)
    print(
        f"results: {os.path.relpath(options.out, REPO)}/results.md, results.json"
        + (", scaling.png" if "scaling" in raw else "")
    )
    if "overhead" in raw:
        print(f"overhead_ratio={raw['overhead']['overhead_ratio']:.3f}")


if __name__ == "__main__":
    main()
