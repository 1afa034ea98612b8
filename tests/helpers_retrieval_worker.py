"""recipes/retrieval.py run twice in one `accelerate launch`: with the cross-process gather, then without it.

Used by tests/test_retrieval_distributed.py so that one 2-process launch (one set of imports, one process group) gives
both the run that must equal 1 process x 2B and its negative control. Arguments: `OUT_GATHER OUT_NO_GATHER FLAG...`;
the flags are the recipe's, without `--output_dir` and `--gather_negatives`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmft.arguments import parse_recipe_args
from mmft.training import run

PRESET = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "scenes_retrieval.yaml"

if __name__ == "__main__":
    gathered, separate, *flags = sys.argv[1:]
    for output_dir, gather in ((gathered, "true"), (separate, "false")):
        argv = [*flags, "--output_dir", output_dir, "--gather_negatives", gather]
        run("retrieval", parse_recipe_args(["--config", str(PRESET), *argv], "retrieval", default_config=str(PRESET)))
