"""pyproject.toml: dependency floors that work, and metadata setuptools accepts without deprecation warnings."""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def test_torch_floor_lets_transformers_load_checkpoint_states():
    """Resuming reads optimizer, scheduler and RNG states with `torch.load`, which transformers refuses below a
    torch version (a `torch.load` vulnerability); the floor must be at least that version."""
    from transformers.utils import import_utils

    needed = re.search(
        r'is_torch_greater_or_equal\("([\d.]+)"\)', inspect.getsource(import_utils.check_torch_load_is_safe)
    )
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


LOCK = PYPROJECT.with_name("requirements") / "lock.txt"


def _locked() -> dict[str, Version]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", LOCK.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): Version(version) for name, version in pins}


def _declared(extras: list[str]) -> list[Requirement]:
    """The dependencies and the named extras' requirements, with `mmft[...]` self-references expanded."""
    project, requirements, pending, seen = _project(), [], list(extras), set()
    requirements += [Requirement(r) for r in project["dependencies"]]
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in project["optional-dependencies"][extra]:
            requirement = Requirement(line)
            if requirement.name == "mmft":
                pending += sorted(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


def test_the_lock_pins_every_declared_dependency_within_its_range():
    """`make install` installs requirements/lock.txt with --no-deps: a dependency added to pyproject.toml without
    `make lock`, or a range moved past the locked version, would otherwise go unnoticed until a fresh install."""
    locked = _locked()
    problems = []
    for requirement in _declared(["dev", "deepspeed"]):
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name not in locked:
            problems.append(f"{requirement} is not in {LOCK.name}")
        elif not requirement.specifier.contains(locked[name], prereleases=True):
            problems.append(f"{requirement} excludes the locked {name}=={locked[name]}")
    assert not problems, "; ".join(problems) + ": run `make lock`, then `make test`"
