"""Every test that README.md and docs/*.md cite exists, so a renamed or deleted test cannot leave a stale citation.

The docs cite tests by function name (`test_cmyk_becomes_rgb`), by file and name
(`test_robustness_run.py::test_nan_...`), by file (`tests/test_qlora.py`), by a glob of files
(`tests/test_metrics_*.py`) and, in the robustness catalogue, by the tail of a name after `…`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Names in the docs that start with `test_` but are no tests: the metrics file a run writes and the metric keys in it
# (the Trainer prefixes each metric with the split, `test`); `test_dual_*` / `test_rerank_*` are families of keys.
NOT_TESTS = {
    "test_results",
    "test_classification_accuracy",  # the multi-task run's prefixed metric keys
    "test_retrieval_dual_t2i_recall",
    "test_excluded_bad_rows",
    "test_bleu_1",
    "test_bleu_4",
    "test_cider",
    "test_rouge_l",
    "test_cider_baseline_frequent",
    "test_cider_baseline_nearest",
    "test_generation_seconds",
    "test_generated_tokens_per_second",
    "test_num_images",
    "test_num_captions",
    "test_dual_",
    "test_rerank_",
}
_NAME = re.compile(r"(?:(\w+)\.py::)?\b(test_[a-z0-9_]+)(\.py|\.json|\*)?")
_ELIDED = re.compile(r"…([a-z_][a-z0-9_]*)")


def _tests() -> dict[str, set[str]]:
    """{test file stem: the test functions it defines} for tests/test_*.py."""
    return {
        path.stem: set(re.findall(r"^\s*(?:async )?def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
        for path in (REPO / "tests").glob("test_*.py")
    }


def stale_citations(text: str, tests: dict[str, set[str]]) -> list[str]:
    """The citations in `text` that name no test in `tests`."""
    functions = set().union(*tests.values())
    stale = []
    for match in _NAME.finditer(text):
        file, name, suffix = match.groups()
        if name in NOT_TESTS or suffix == ".json":
            continue
        if suffix == ".py":
            found = name in tests
        elif suffix == "*":  # a glob of test files
            found = any(stem.startswith(name) for stem in tests)
        elif file:
            found = name in tests.get(file, set())
        else:
            found = name in functions or name in tests  # a file may be cited without its `.py`
        if not found:
            stale.append(match.group(0))
    stale += [f"…{tail}" for tail in _ELIDED.findall(text) if not any(f.endswith(tail) for f in functions)]
    return stale


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_test_a_doc_cites_exists(doc):
    stale = stale_citations(doc.read_text(encoding="utf-8"), _tests())
    assert not stale, f"{doc.name} cites tests that do not exist (renamed or removed?): {stale}"


def test_a_stale_citation_is_found():
    """Negative control: names that no test has, in each form the docs use, are all reported; real ones are not."""
    tests = {"test_robustness_run": {"test_huge_learning_rate_stops_at_the_first_non_finite_loss"}}
    text = (
        "`test_robustness_run.py::test_run_vqa_checks_output_dir`, `test_gone`, `tests/test_gone.py`, "
        "`tests/test_gone_*.py`, `…no_such_tail[x]`, `test_robustness_run.py::test_huge_learning_rate_stops_at_"
        "the_first_non_finite_loss`, `tests/test_robustness_run.py`, `…first_non_finite_loss`, `test_results.json`, "
        "`test_cider`"
    )
    assert stale_citations(text, tests) == [
        "test_robustness_run.py::test_run_vqa_checks_output_dir",
        "test_gone",
        "test_gone.py",
        "test_gone_*",
        "…no_such_tail",
    ]
