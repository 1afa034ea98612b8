"""The multi-task study (docs/multitask.md): each task trained alone against the same tasks trained jointly, at equal
steps per task, and the three sampling strategies, over seeds.

    python benchmarks/multitask_study.py --steps_per_task 150 --seeds 2 --out /tmp/study
    python benchmarks/multitask_study.py --steps_per_task 150 --seeds 2 -- --vqa.max_eval_samples 1000

Every run is `recipes/multitask.py` on a preset derived from `--config` (default: the offline default,
`multitask_easy_vqa_scenes.yaml`): the joint runs keep every task and train `steps_per_task x tasks` steps under each
`--task_sampling`; an alone run keeps one task and trains `steps_per_task` steps. So a task alone and the same task in
the round-robin joint run take the same number of steps, with the same towers, bridge, head, flags and schedule; the
proportional and temperature runs give tasks other shares (the table gives the steps each task drew). Flags after
`--` go to every run. It prints a Markdown table (what docs/multitask.md records) and writes `<out>/study.json`.
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.reproduce import provenance  # noqa: E402
from mmft.presets import load_preset  # noqa: E402
from mmft.tasks import get_task  # noqa: E402

DEFAULT_CONFIG = REPO / "recipes" / "configs" / "multitask_easy_vqa_scenes.yaml"
STRATEGIES = ("round_robin", "proportional", "temperature")


def flags_for(tasks: list[str], flags: list[str]) -> list[str]:
    """`flags` without the `--<task>.<flag> value` pairs of tasks not in the run (the recipe refuses those)."""
    kept, tokens = [], list(flags)
    while tokens:
        token = tokens.pop(0)
        name = token[2:].split("=", 1)[0]
        if token.startswith("--") and "." in name and name.split(".", 1)[0] not in tasks:
            if "=" not in token and tokens and not tokens[0].startswith("--"):
                tokens.pop(0)
            continue
        kept.append(token)
    return kept


def run(preset: dict, out: Path, steps: int, seed: int, flags: list[str]) -> tuple[dict, float]:
    """One multi-task run on `preset` (written beside its outputs); its joint test metrics and wall seconds."""
    flags = flags_for(list(preset["tasks"]), flags)
    out.mkdir(parents=True, exist_ok=True)
    config = out / "preset.yaml"
    config.write_text(yaml.safe_dump(preset, sort_keys=False))
    command = [sys.executable, str(REPO / "recipes" / "multitask.py"), "--config", str(config)]
    command += ["--max_steps", str(steps), "--seed", str(seed), "--output_dir", str(out), *flags]
    start = time.time()
    with (out / "log.txt").open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    seconds = time.time() - start
    return json.loads((out / "test_results.json").read_text()), seconds


def main_metric(task: str) -> str:
    return get_task(task).main_metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--steps_per_task", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first_seed", type=int, default=42)
    parser.add_argument("--out", default="outputs/multitask_study")
    parser.add_argument("flags", nargs="*", help="flags for every run (after --)")
    args = parser.parse_args()
    base = load_preset(args.config)
    tasks = list(base["tasks"])
    out = Path(args.out)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for task in tasks:
            alone = {**base, "tasks": {task: base["tasks"][task]}}
            metrics, seconds = run(alone, out / f"seed{seed}" / f"alone-{task}", args.steps_per_task, seed, args.flags)
            key = f"test_{task}_{main_metric(task)}"
            rows.append(
                {"seed": seed, "run": "alone", "task": task, "steps": args.steps_per_task, "metric": metrics[key]}
            )
            rows[-1]["seconds"] = seconds
        for strategy in STRATEGIES:
            joint = {**base, "task_sampling": strategy}
            steps = args.steps_per_task * len(tasks)
            metrics, seconds = run(joint, out / f"seed{seed}" / f"joint-{strategy}", steps, seed, args.flags)
            drawn = json.loads((out / f"seed{seed}" / f"joint-{strategy}" / "task_sampling.json").read_text())["draws"]
            for task in tasks:
                key = f"test_{task}_{main_metric(task)}"
                rows.append({"seed": seed, "run": strategy, "task": task, "steps": drawn[task], "metric": metrics[key]})
                rows[-1]["seconds"] = seconds
    print(report(rows, tasks))
    (out / "study.json").write_text(json.dumps({"rows": rows, **provenance()}, indent=2))


def report(rows: list[dict], tasks: list[str]) -> str:
    """Per task: alone and each strategy, metric per seed, mean and steps drawn."""
    lines = ["| task (main metric) | run | steps (per seed) | per seed | mean |", "|---|---|---|---|---|"]
    for task in tasks:
        for run_name in ("alone", *STRATEGIES):
            picked = [r for r in rows if r["task"] == task and r["run"] == run_name]
            if not picked:
                continue
            values = [r["metric"] for r in picked]
            steps = "/".join(str(r["steps"]) for r in picked)
            per_seed = ", ".join(f"{v:.4f}" for v in values)
            lines.append(
                f"| {task} ({main_metric(task)}) | {run_name} | {steps} | {per_seed} | {statistics.mean(values):.4f} |"
            )
    provenance_line = ", ".join(f"{k} {v}" for k, v in provenance().items())
    return "\n".join(lines) + f"\n\n{provenance_line}\n"


if __name__ == "__main__":
    main()
