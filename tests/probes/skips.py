"""Run only by tests/test_skip_policy.py (its name keeps it out of the suite): a skip that is not on the allow-list,
and a test that passes."""

import pytest


def test_a_skip_that_hides_a_missing_install():
    pytest.skip("could not import 'something_the_suite_needs'")


def test_that_passes():
    pass
