"""FSDP2 on CPU processes (gloo): mmft's auto-wrap units shard the model, and sharded training matches unsharded.

accelerate 1.15 turns a CPU launch of fsdp.yaml into plain DDP (FSDP is only enabled for GPU-like process groups),
so `helpers_fsdp_worker.py` applies the same auto-wrap policy and `fully_shard` calls itself under `torchrun`, and
trains outside the Trainer: SGD in eval mode against one process, and AdamW with dropout on against DDP (see
docs/distributed.md for what this does and does not cover).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")

pytestmark = pytest.mark.e2e


CASES = ("lora", "full", "lora:skew")  # lora:skew is the negative control: rank 1 trains on shifted labels


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    """Every case in one `torchrun` of 2 processes (one process group, one interpreter start per rank)."""
    out = tmp_path_factory.mktemp("fsdp") / "results.json"
    command = [
        str(TORCHRUN),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(TESTS / "helpers_fsdp_worker.py"),
        "--cases",
        ",".join(CASES),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, cwd=TESTS, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("plan", ["lora", "full"])
def test_fsdp2_sharded_training_matches_one_process(results, plan):
    result = results[plan]
    # Every tower layer and the bridge became its own unit, and each rank holds half of the parameters.
    assert {"BertLayer", "Block", "CoAttentionBridge"} <= set(result["units"])
    assert result["local_parameter_fraction"] == pytest.approx(0.5, abs=0.01)
    assert result["losses"] == pytest.approx(result["reference_losses"], abs=1e-5)
    assert result["max_weight_diff"] <= 1e-5
    adamw = result["adamw_dropout"]  # AdamW with dropout on, against DDP on the same halves and seeds
    print(
        f"{plan}: SGD vs 1 process {result['max_weight_diff']:.1e}; "
        f"AdamW + dropout vs DDP {adamw['max_weight_diff']:.1e}"
    )
    assert adamw["losses"] == pytest.approx(adamw["reference_losses"], abs=1e-5)
    assert adamw["max_weight_diff"] <= 1e-5


def test_fsdp2_comparison_detects_ranks_that_train_on_other_data(results):
    # Negative control for the test above: rank 1 gets shifted labels, so sharded and reference runs must differ.
    result = results["lora:skew"]
    adamw = result["adamw_dropout"]["max_weight_diff"]
    print(f"rank 1 on shifted labels: SGD {result['max_weight_diff']:.1e}; AdamW + dropout {adamw:.1e}")
    assert result["max_weight_diff"] > 1e-4
    assert adamw > 1e-4
