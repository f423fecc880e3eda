"""Who may join a deployed federation: registered silos over TLS, and nobody else."""

from __future__ import annotations

import socket
import ssl
import subprocess

import pytest

from fl_server.certs import make_ca, make_server_certificate
from harness.deploy_local import BIN
from harness.local_run import free_port

pytestmark = pytest.mark.deployment


def test_registered_silos_are_online_over_tls(shared_federation):
    status = shared_federation.nodes()
    for silo in shared_federation.silos:
        assert status[silo.node_id] == "online", (silo.name, status)


def test_an_unregistered_node_is_refused(shared_federation):
    key, _ = shared_federation.new_node_keys("intruder")
    before = set(shared_federation.nodes())
    code, output = shared_federation.attempt_node(
        auth_key=key, root_certificates=shared_federation.certs / "ca.crt"
    )
    assert code not in (0, None), output[-2000:]
    assert "Failed to activate SuperNode" in output
    assert (
        "No SuperNode found with the given public key"
        in shared_federation.superlink_log.read_text()
    )
    assert set(shared_federation.nodes()) == before


def test_a_node_without_an_authentication_key_is_refused(shared_federation):
    code, output = shared_federation.attempt_node(
        auth_key=None, root_certificates=shared_federation.certs / "ca.crt"
    )
    assert code not in (0, None), output[-2000:]
    assert "All SuperNodes must be registered" in output


def test_a_node_without_tls_cannot_connect(shared_federation):
    code, output = shared_federation.attempt_node(
        auth_key=None, root_certificates=None, insecure=True
    )
    assert code not in (0, None), output[-2000:]
    assert "could not establish a connection" in output
    # and a registered silo's key is never sent without TLS: Flower refuses to start
    key = shared_federation.silos[0].auth_key
    code, output = shared_federation.attempt_node(
        auth_key=key, root_certificates=None, insecure=True
    )
    assert code not in (0, None), output[-2000:]
    assert "requires a secure TLS connection" in output


def test_a_node_trusting_another_ca_cannot_connect(shared_federation, tmp_path):
    other = make_ca(tmp_path / "other-ca")
    code, output = shared_federation.attempt_node(
        auth_key=shared_federation.silos[0].auth_key, root_certificates=other.public
    )
    assert code not in (0, None), output[-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" in output


def test_the_superlink_speaks_only_tls_with_the_federation_certificate(shared_federation):
    address = ("127.0.0.1", shared_federation.port)
    trusted = ssl.create_default_context(cafile=str(shared_federation.certs / "ca.crt"))
    with (
        socket.create_connection(address, timeout=10) as raw,
        trusted.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    untrusted = ssl.create_default_context()  # the system's CAs do not know ours
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(address, timeout=10) as raw,
    ):
        untrusted.wrap_socket(raw, server_hostname="127.0.0.1")
    with socket.create_connection(address, timeout=10) as raw:  # plain HTTP: no answer
        raw.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        raw.settimeout(10)
        try:
            reply = raw.recv(1024)
        except (ConnectionResetError, TimeoutError):
            reply = b""
        assert not reply.startswith(b"HTTP/")


def test_supernode_authentication_needs_tls_on_the_superlink(tmp_path):
    ca = make_ca(tmp_path)
    make_server_certificate(tmp_path, ca=ca)
    result = subprocess.run(
        [
            str(BIN / "flower-superlink"),
            "--insecure",
            "--enable-supernode-auth",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "requires encrypted TLS" in result.stdout + result.stderr
