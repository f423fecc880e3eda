"""Fixtures for deployment tests (helpers in deploy_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from deploy_helpers import NAN, SHAPE, start_deployment

from harness.deploy_local import LocalDeployment


@pytest.fixture(scope="session")
def shared_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """Three silos: an honest one, one that sends NaN and one that sends wrongly shaped
    arrays (node-config ``attack``)."""
    yield from start_deployment(
        tmp_path_factory.mktemp("shared-federation"),
        silos=3,
        node_config={NAN: {"attack": "nan"}, SHAPE: {"attack": "shape"}},
        database=False,  # never restarted: Flower's in-memory state is enough
    )
