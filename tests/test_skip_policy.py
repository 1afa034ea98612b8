"""A skip outside `ALLOWED_SKIPS` (tests/conftest.py) fails the run and is listed with its reason, in one process and
under pytest-xdist (where the controller sees the workers' reports), so a missing install cannot pass CI as a skip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PROBE = TESTS / "probes" / "skips.py"  # one unexpected skip, one pass; not collected by the suite itself


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["one_process", "xdist"])
def test_an_unexpected_skip_fails_the_run_and_names_itself(workers):
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *workers, str(PROBE)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=TESTS.parent, timeout=300)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-2000:]
    assert "1 passed, 1 skipped" in result.stdout
    assert "skips.py::test_a_skip_that_hides_a_missing_install: Skipped: could not import" in result.stdout
