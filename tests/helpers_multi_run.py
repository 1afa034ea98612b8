"""recipes/vqa.py (with its default preset) once per argument group, one group after another in the same launch.

    accelerate launch ... tests/helpers_multi_run.py <flags of run 1> :: <flags of run 2> ...

Several multi-process runs then pay for one launch: the processes start (and import torch, transformers and mmft)
once. Used where a test compares runs with one another, not with how a fresh process starts.
"""

from __future__ import annotations

import sys

from helpers_launch import PRESET

from mmft.arguments import parse_recipe_args
from mmft.training import run

RUN_SEPARATOR = "::"


def argument_groups(argv: list[str]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for argument in argv:
        if argument == RUN_SEPARATOR:
            groups.append([])
        else:
            groups[-1].append(argument)
    return groups


if __name__ == "__main__":
    for group in argument_groups(sys.argv[1:]):
        run("vqa", parse_recipe_args(group, "vqa", default_config=str(PRESET)))
