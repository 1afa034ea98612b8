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
