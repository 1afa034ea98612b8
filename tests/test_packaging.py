"""pyproject.toml: dependency floors that work, and metadata setuptools accepts without deprecation warnings."""

from __future__ import annotations

import inspect
import re
import tomllib
import warnings
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def test_torch_floor_lets_transformers_load_checkpoint_states():
    """Resuming reads optimizer, scheduler and RNG states with `torch.load`, which transformers refuses below a
    torch version (a `torch.load` vulnerability); the floor must be at least that version."""
    from transformers.utils import import_utils

    needed = re.search(r'is_torch_greater_or_equal\("([\d.]+)"\)', inspect.getsource(import_utils.check_torch_load_is_safe))
    torch = next(Requirement(r) for r in _project()["dependencies"] if Requirement(r).name == "torch")
    floors = [Version(s.version) for s in torch.specifier if s.operator in (">=", "==", "~=")]
    assert floors and min(floors) >= Version(needed.group(1)), f"{torch} allows torch below {needed.group(1)}"


def test_license_is_an_spdx_expression_setuptools_takes_without_warnings():
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    assert isinstance(_project()["license"], str)  # `license = "Apache-2.0"`, not a table
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distribution = apply_configuration(Distribution(), str(PYPROJECT))
    messages = [str(w.message) for w in caught if "license" in str(w.message).lower()]
    assert not messages, messages
    assert distribution.metadata.license_expression == "Apache-2.0"
