"""Fixtures for end-to-end runs of the real `flwr run .`."""

from __future__ import annotations

import pytest

from harness.local_run import LocalFlwr


@pytest.fixture(scope="module")
def flwr(tmp_path_factory: pytest.TempPathFactory):
    """A private local SuperLink (own FLWR_HOME, FEDSILO_HOME and ports) for one test
    module, killed at its end: modules run side by side on parallel workers. A module of
    independent tests overrides it with one per test."""
    with LocalFlwr(tmp_path_factory.mktemp("flwr")) as harness:
        yield harness
