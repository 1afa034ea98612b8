"""Issue 30's acceptance: "a multi-task checkpoint gives single-task models that pass the existing ... tests".

Every check of tests/test_model_contract.py that runs per model class (`@classes`: initialisation, attention
backends, input embeddings, outputs, export) runs again here on the task models a multi-task checkpoint gives back:
a tiny `MMFTForMultiTask` holding the task beside vqa, classification and retrieval, saved, reloaded with
`AutoModelForMultiTask`, `for_task(task).save_pretrained`, loaded with the task's Auto class
(`helpers_contract.tiny_for_task`). The checks are the contract module's own functions, collected here too, with the
module's `tiny` swapped for that route; a check added there runs here with no edit. Its negative control (a bridge
init that skips a parameter is found) runs on that route too.
"""

from __future__ import annotations

import functools

import pytest
import test_model_contract as contract
from helpers_contract import MODEL_CLASSES, class_id, task_of, tiny_for_task
from test_model_contract import test_negative_control_a_parameter_init_skips_is_found  # noqa: F401  (collected here)

TASK_CLASSES = [model_class for model_class in MODEL_CLASSES if task_of(model_class)]  # MMFTModel is no task's


def _is_model_class_mark(mark) -> bool:
    return mark.name == "parametrize" and mark.args[0] == "model_class"


def _over_task_classes(check):
    """`check` (a contract test), parametrized over the task model classes instead of every model class; its other
    parametrizations kept."""

    @functools.wraps(check)
    def run(*args, **kwargs):
        return check(*args, **kwargs)

    others = [mark for mark in getattr(check, "pytestmark", []) if not _is_model_class_mark(mark)]
    run.pytestmark = [*others, pytest.mark.parametrize("model_class", TASK_CLASSES, ids=class_id).mark]
    return run


# The per-class checks, collected by pytest in this module (with this module's fixtures) as well as in their own.
CHECKS = {
    name: _over_task_classes(check)
    for name, check in vars(contract).items()
    if name.startswith("test_") and any(_is_model_class_mark(mark) for mark in getattr(check, "pytestmark", []))
}
globals().update(CHECKS)


@pytest.fixture(autouse=True)
def through_a_multitask_checkpoint(monkeypatch):
    """Every tiny model the contract checks build comes from a multi-task checkpoint."""
    monkeypatch.setattr(contract, "tiny", tiny_for_task)


def test_the_contract_checks_run_here():
    """The collection above found the contract's per-class checks (not an empty module that passes)."""
    assert len(CHECKS) >= 9 and "test_whole_model_exports_and_matches_eager" in CHECKS, list(CHECKS)
    assert {"vqa", "classification", "retrieval"} <= {task_of(model_class) for model_class in TASK_CLASSES}
