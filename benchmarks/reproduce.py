"""`make reproduce TASK=... SEEDS=3`: run a task's offline default over several seeds and report its main metric.

    python benchmarks/reproduce.py --task classification --seeds 3     # seeds 42, 43, 44
    python benchmarks/reproduce.py --task all --seeds 3                # every default (`make reproduce-all`: hours)
    python benchmarks/reproduce.py --task vqa --seeds 2 -- --max_steps 20   # flags after `--` go to the recipe

Each run is `accelerate launch recipes/<task>.py --seed S --output_dir <out>/<task>/seed<S>` (plus the flags after
`--`), from the installed environment, one after another. The report gives, per seed, the task's main metric
(`Task.main_metric`), the metrics it is compared with (`Task.compared_metrics`, and any `<main>_baseline_<name>` the
run scored) and the wall time; then the mean and the minimum over seeds; then the commit, whether the tree had
uncommitted changes, and the hash of `requirements/lock.txt`. It is printed as Markdown (what docs/results.md
records) and written to `<out>/<task>.json`. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = ("vqa", "classification", "retrieval", "captioning")


def provenance() -> dict[str, str]:
    """The commit, whether the work tree differs from it, the lock's hash and the machine, for the report."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO).stdout.strip()

    lock = REPO / "requirements" / "lock.txt"
    return {
        "commit": git("rev-parse", "--short=12", "HEAD") or "unknown",
        "tree": "modified" if git("status", "--porcelain", "--untracked-files=no") else "clean",
        "lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest()[:12] if lock.is_file() else "no lock",
        "cores": str(os.cpu_count()),
    }


def run_seed(task: str, seed: int, output_dir: Path, recipe_flags: list[str]) -> dict:
    """One launch of the task's recipe; its test metrics and wall time (seconds)."""
    threads = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate),
        "launch",
        "--num_cpu_threads_per_process",
        threads,
        str(REPO / "recipes" / f"{task}.py"),
        "--seed",
        str(seed),
        "--output_dir",
        str(output_dir),
        *recipe_flags,
    ]
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (output_dir.parent / f"seed{seed}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(
            f"reproduce: {task} seed {seed} failed (exit {result.returncode}); log: "
            f"{output_dir.parent / f'seed{seed}.log'}"
        )
    metrics = json.loads((output_dir / "test_results.json").read_text())
    return {"seed": seed, "seconds": seconds, "metrics": metrics}


def columns(task_class, runs: list[dict]) -> list[str]:
    """The main metric first, then what it is compared with: declared comparisons and baselines the runs scored."""
    main = task_class.main_metric
    baselines = sorted(
        {
            key.removeprefix("test_")
            for run in runs
            for key in run["metrics"]
            if key.startswith(f"test_{main}_baseline_")
        }
    )
    return [main, *task_class.compared_metrics, *baselines]


def report(task: str, runs: list[dict], names: list[str], origin: dict[str, str]) -> str:
    """Markdown: one row per seed, then mean and minimum; the provenance line under it."""
    header = ["seed", *names, "wall"]
    rows = [
        [
            str(run["seed"]),
            *(f"{run['metrics'].get(f'test_{n}', float('nan')):.4f}" for n in names),
            f"{run['seconds'] / 60:.1f} min",
        ]
        for run in runs
    ]
    for label, reduce in (("mean", statistics.fmean), ("min", min)):
        values = [reduce([run["metrics"].get(f"test_{n}", float("nan")) for run in runs]) for n in names]
        rows.append([label, *(f"{v:.4f}" for v in values), f"{reduce([r['seconds'] for r in runs]) / 60:.1f} min"])
    lines = [f"### {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    origin_text = ", ".join(f"{key} {value}" for key, value in origin.items())
    return "\n".join([*lines, "", f"Measured with {origin_text}."])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, recipe_flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="vqa", choices=[*TASKS, "all"])
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds, from --first_seed on")
    parser.add_argument("--first_seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "reproduce")
    args = parser.parse_args(ours)
    from mmft import get_task

    origin = provenance()
    for task in TASKS if args.task == "all" else (args.task,):
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        runs = [run_seed(task, seed, args.out / task / f"seed{seed}", recipe_flags) for seed in seeds]
        names = columns(get_task(task), runs)
        text = report(task, runs, names, origin)
        print(text, flush=True)
        record = {"task": task, "columns": names, "runs": runs, "recipe_flags": recipe_flags, **origin}
        (args.out / f"{task}.json").write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
