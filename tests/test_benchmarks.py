"""The benchmarks' FLOP counter (exact attention FLOPs on a CPU) and a smoke run of `benchmarks/run_all.py --quick`.

No timings are asserted: only that every benchmark runs end to end and reports well-formed figures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from flops_util import flop_counter  # noqa: E402


@pytest.mark.parametrize("with_mask", [False, True])
def test_attention_flops_are_counted_forward_and_backward(with_mask):
    # Forward: q @ k^T and weights @ v, 2*B*H*Nq*Nk*d each. Backward, as PyTorch counts flash kernels: the scores
    # are recomputed (one product) and four products form the gradients. 2 + 5 products in all.
    batch, heads, queries, keys, dim = 2, 3, 5, 7, 8
    q = torch.randn(batch, heads, queries, dim, requires_grad=True)
    k = torch.randn(batch, heads, keys, dim, requires_grad=True)
    v = torch.randn(batch, heads, keys, dim, requires_grad=True)
    mask = torch.zeros(batch, 1, 1, keys) if with_mask else None
    counter = flop_counter()
    with counter:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
    assert counter.get_total_flops() == 14 * batch * heads * queries * keys * dim


@pytest.mark.e2e  # runs the recipe's Trainer path and three worker processes: about a minute on 2 idle cores
def test_quick_run_reports_every_benchmark(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.fullmatch(r"overhead_ratio=\d+\.\d{3}", result.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "results.json").read_text())
    assert {row["benchmark"].split()[0] for row in report["rows"]} == {"1", "2", "3", "4", "5"}
    raw = report["raw"]
    assert raw["overhead"]["steps"] == 4  # run_all --quick asks for 4 timed steps after 1 warm-up step
    assert raw["data"]["loader_samples_per_s"] > 0 and raw["data"]["step_samples_per_s"] > 0
    plans = raw["plans"]["tiny_b2"]["plans"]
    assert plans["frozen"]["vision"] == plans["frozen"]["text"] == 0 < plans["lora"]["vision"] < plans["full"]["vision"]
    assert all(case["flops_per_step"] > 0 and 0 < case["mfu"] for case in raw["mfu"]["cases"])
    assert (tmp_path / "scaling.png").stat().st_size > 0


@pytest.mark.e2e  # two tiny recipe launches
def test_reproduce_reports_each_seed_then_mean_and_minimum(tmp_path, tiny_text_dir):
    from helpers_data import make_imagefolder
    from helpers_launch import tiny_tower_flags

    data = make_imagefolder(tmp_path / "data", n_train=16, n_test=8)
    tiny = [
        "--dataset",
        str(data),
        *tiny_tower_flags(tiny_text_dir),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
    ]
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "reproduce.py"),
        "--task",
        "vqa",
        "--seeds",
        "2",
        "--first_seed",
        "5",
        "--out",
        str(tmp_path / "out"),
        "--",
        *tiny,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "vqa.json").read_text())
    values = [run["metrics"]["test_accuracy"] for run in record["runs"]]
    assert [run["seed"] for run in record["runs"]] == [5, 6] and record["columns"][0] == "accuracy"
    table = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in result.stdout.splitlines()
        if line.startswith("| ")
    }
    assert table["5"] == f"{values[0]:.4f}" and table["6"] == f"{values[1]:.4f}"
    assert table["mean"] == f"{sum(values) / 2:.4f}" and table["min"] == f"{min(values):.4f}"
    assert f"commit {record['commit']}" in result.stdout and len(record["lock_sha256"]) == 12
