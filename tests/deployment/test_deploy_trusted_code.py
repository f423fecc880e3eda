"""A SuperNode that runs only signed app bundles (``--trusted-entities``) refuses an
unsigned one: in Flower 1.42 a bundle submitted with ``flwr run <folder>`` carries no
signature (signatures come from Flower Hub), so such a silo takes no part."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from deploy_helpers import RUN_TIMEOUT, node_name, start_deployment

pytestmark = pytest.mark.deployment

SIGNED_ONLY = 1


def trusted_entities(folder: Path) -> Path:
    """A trusted-entities file with one reviewer's Ed25519 public key."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    path = folder / "trusted-entities.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(f"fpk_reviewer: '{line} reviewer'\n")
    return path


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("trusted-code")
    entities = trusted_entities(base / "reviewer")
    yield from start_deployment(
        base,
        silos=2,
        node_args={SIGNED_ONLY: ["--trusted-entities", str(entities)]},
        database=False,
    )


def test_a_silo_that_runs_only_signed_bundles_refuses_an_unsigned_one(federation):
    run = federation.run(
        {"num-server-rounds": 1, "min-nodes": 1, "validation": "server", "run-name": "unsigned"},
        timeout=RUN_TIMEOUT,
    )
    assert run.returncode == 0, run.output[-4000:]
    refused = node_name(federation, SIGNED_ONLY)
    assert refused in run.history()[0]["no_statistics"]
    assert run.history()[1]["clients"] == [node_name(federation, 0)]
    log = federation.silos[SIGNED_ONLY].log.read_text(errors="replace")
    assert "App verification is not supported by the connected SuperLink" in log
    assert run.summary["stop_reason"] == "completed"
