"""Fixtures for end-to-end runs of the real `flwr run .`."""

from __future__ import annotations

import pytest

from simulations.local_run import LocalFlwr


@pytest.fixture(scope="session")
def flwr(tmp_path_factory: pytest.TempPathFactory):
    """One private local SuperLink for the whole session, killed at the end."""
    harness = LocalFlwr(tmp_path_factory.mktemp("flwr"))
    try:
        yield harness
    finally:
        harness.stop()
