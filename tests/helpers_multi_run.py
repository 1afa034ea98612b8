"""recipes/vqa.py (its demo preset named by --config) once per argument group, one after another in one launch.

    accelerate launch ... tests/helpers_multi_run.py <flags of run 1> :: <flags of run 2> ...

Several runs then pay for one launch: the processes start (and import torch, transformers and mmft) once. Used where a
test compares runs with one another, not with how a fresh process starts. The main process prints RUN_MARKER before
each run, so `run_outputs` can tell the runs' printed output apart.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from helpers_launch import run_vqa_recipe

MULTI_RUN = Path(__file__).resolve()
RUN_SEPARATOR = "::"
RUN_MARKER = "=== helpers_multi_run: run {} ==="


def argument_groups(argv: list[str]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for argument in argv:
        if argument == RUN_SEPARATOR:
            groups.append([])
        else:
            groups[-1].append(argument)
    return groups


def run_groups(argv: list[str], run_one: Callable[[list[str]], object]) -> None:
    """`run_one(flags)` for each group of `argv`, announcing each run on the main process's stdout and stderr."""
    for number, group in enumerate(argument_groups(argv)):
        if os.environ.get("RANK", "0") == "0":
            print(RUN_MARKER.format(number), flush=True)
            print(RUN_MARKER.format(number), file=sys.stderr, flush=True)
        run_one(group)


def run_outputs(printed: str) -> list[str]:
    """What each run of a launch printed so far, in order, from its stdout, its stderr, or a log of both."""
    parts = re.split("^" + re.escape(RUN_MARKER).replace(r"\{\}", r"(\d+)") + "$", printed, flags=re.MULTILINE)
    outputs: dict[int, str] = {}
    for number, text in zip(parts[1::2], parts[2::2], strict=True):
        outputs[int(number)] = outputs.get(int(number), "") + text
    return [outputs[number] for number in sorted(outputs)]


def when_run(number: int, ready: Callable[[str], bool]) -> Callable[[str], bool]:
    """A kill moment for `helpers_launch.kill_when`: `ready(what run `number` of the launch has printed so far)`,
    False before that run starts."""

    def moment(log_text: str) -> bool:
        outputs = run_outputs(log_text)
        return len(outputs) > number and ready(outputs[number])

    return moment


if __name__ == "__main__":
    run_groups(sys.argv[1:], run_vqa_recipe)
