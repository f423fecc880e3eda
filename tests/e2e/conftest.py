"""Fixtures for end-to-end runs of the real `flwr run .`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_helpers import DIGITS_FAST

from harness.local_run import FlwrRun, LocalFlwr


@pytest.fixture(scope="module")
def flwr(tmp_path_factory: pytest.TempPathFactory):
    """A private local SuperLink (own FLWR_HOME, FEDSILO_HOME and ports) for one test
    module, killed at its end: modules run side by side on parallel workers. A module of
    independent tests overrides it with one per test."""
    with LocalFlwr(tmp_path_factory.mktemp("flwr")) as harness:
        yield harness


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFlwr, FlwrRun]]:
    """One default two-round digits run with its int8 export, tracked in MLflow's local
    store: the outputs test (test_simulation.py) and the MLflow test (test_tracking.py)
    read the same run instead of starting one each."""
    with LocalFlwr(tmp_path_factory.mktemp("flwr-digits")) as harness:
        config = {**DIGITS_FAST, "num-server-rounds": 2, "tracking": "mlflow"}
        yield harness, harness.run({**config, "run-name": "digits-basic"})
