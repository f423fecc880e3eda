"""Certificates and keys for a deployed federation (``fl-server certs``).

Three kinds of files, made with the ``cryptography`` package:

- a **CA** (``ca.crt``, ``ca.key``): the federation's own certificate authority. Its
  certificate goes to every silo (``flower-supernode --root-certificates``) and to the
  operator's ``flwr`` connection (``root-certificates``); its key stays with the operator.
- the **SuperLink's TLS certificate** (``server.crt``, ``server.key``), signed by the CA,
  valid for the host names and IP addresses the silos use to reach the SuperLink, plus
  ``localhost`` and ``127.0.0.1``: the SuperLink's own SuperExec (which starts the
  ServerApp) connects to it over loopback and checks the same certificate.
- a **SuperNode authentication key pair** per silo (``<name>.key``, ``<name>.pub``): an
  elliptic-curve P-384 key in OpenSSH format, the format ``flower-supernode
  --auth-supernode-private-key`` and ``flwr supernode register`` read. A silo makes its
  own pair and sends only the ``.pub`` file to the operator.

Private keys are written with mode 0600 and never overwritten.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


class CertificateError(ValueError):
    """A certificate or key cannot be made or read (the message says which and why)."""


@dataclass(frozen=True)
class Pair:
    """A certificate (or public key) and its private key."""

    public: Path
    private: Path


def make_ca(folder: str | Path, *, name: str = "fedsilo federation CA", days: int = 3650) -> Pair:
    """A new self-signed CA in ``folder`` (``ca.crt``, ``ca.key``)."""
    folder = Path(folder).expanduser()
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA384())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return _write_pair(folder / CA_CERT, pem, folder / CA_KEY, key)


def make_server_certificate(
    folder: str | Path,
    *,
    ca: Pair,
    hosts: Sequence[str] = (),
    days: int = 825,
) -> Pair:
    """The SuperLink's TLS certificate (``server.crt``, ``server.key``) signed by ``ca``,
    valid for ``hosts`` (names or IP addresses) and for loopback."""
    folder = Path(folder).expanduser()
    ca_cert, ca_key = _load_ca(ca)
    names = list(dict.fromkeys([*hosts, *LOOPBACK_HOSTS]))
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_agreement=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return _write_pair(folder / SERVER_CERT, pem, folder / SERVER_KEY, key)


def make_node_keys(folder: str | Path, name: str) -> Pair:
    """A SuperNode's authentication key pair: ``<name>.key`` (OpenSSH private key) and
    ``<name>.pub`` (OpenSSH public key, the one to register)."""
    if not name or "/" in name or name.startswith("."):
        raise CertificateError(f"node name {name!r} must be a plain file name")
    folder = Path(folder).expanduser()
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    comment = f" {name}\n".encode()
    return _write_pair(folder / f"{name}.pub", public + comment, folder / f"{name}.key", private)


def make_all(
    folder: str | Path, *, hosts: Sequence[str] = (), nodes: Sequence[str] = ()
) -> dict[str, Pair]:
    """CA, server certificate and node key pairs in one folder (for trials on one
    machine; in a real federation each silo makes its own node keys)."""
    ca = make_ca(folder)
    out = {"ca": ca, "server": make_server_certificate(folder, ca=ca, hosts=hosts)}
    for name in nodes:
        out[name] = make_node_keys(folder, name)
    return out


# -- files -----------------------------------------------------------------------------


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_pair(
    public: Path, public_data: bytes, private: Path, key: ec.EllipticCurvePrivateKey | bytes
) -> Pair:
    """Both files, or neither: an existing one stops before anything is written."""
    for path in (public, private):
        if path.exists():
            raise CertificateError(f"refusing to overwrite {path}; choose another folder")
    private_data = key if isinstance(key, bytes) else _pem_private(key)
    return Pair(_write_public(public, public_data), _write_private(private, private_data))


def _write_private(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CertificateError(
            f"refusing to overwrite {path}: it may be in use; choose another folder"
        ) from None
    try:
        os.fchmod(fd, 0o600)  # the mode given to open() is filtered by the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _write_public(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise CertificateError(f"refusing to overwrite {path}; choose another folder")
    path.write_bytes(data)
    return path


def _load_ca(ca: Pair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca.public.read_bytes())
        key = serialization.load_pem_private_key(ca.private.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CertificateError(f"cannot read the CA {ca.public} / {ca.private}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{ca.private} is not an elliptic-curve key")
    return cert, key


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    """A KeyUsage extension with the named uses on and every other one off."""
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{name: allowed.get(name, False) for name in names})


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


# -- command line ----------------------------------------------------------------------


def build_parser(prog: str = "fl-server certs") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Certificates and keys for a deployed federation: the CA, the "
        "SuperLink's TLS certificate, SuperNode authentication key pairs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ca = sub.add_parser("ca", help="make the federation's CA (ca.crt, ca.key)")
    ca.add_argument("--out", required=True, help="folder for ca.crt and ca.key")
    ca.add_argument("--name", default="fedsilo federation CA", help="the CA's common name")
    ca.add_argument("--days", type=int, default=3650)
    server = sub.add_parser("server", help="make the SuperLink's TLS certificate")
    server.add_argument("--ca", required=True, help="folder holding ca.crt and ca.key")
    server.add_argument("--out", required=True, help="folder for server.crt and server.key")
    server.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or IP address silos use to reach the SuperLink (repeatable); "
        "localhost and 127.0.0.1 are always included",
    )
    server.add_argument("--days", type=int, default=825)
    node = sub.add_parser("node", help="make a SuperNode's authentication key pair")
    node.add_argument("--out", required=True, help="folder for NAME.key and NAME.pub")
    node.add_argument("--name", required=True, help="file name (e.g. the silo's name)")
    every = sub.add_parser("all", help="CA, server certificate and node keys in one folder")
    every.add_argument("--out", required=True)
    every.add_argument("--host", action="append", default=[])
    every.add_argument("--node", action="append", default=[], help="node name (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "fl-server certs") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        if args.command == "ca":
            made = {"ca": make_ca(args.out, name=args.name, days=args.days)}
        elif args.command == "server":
            folder = Path(args.ca).expanduser()
            ca = Pair(folder / CA_CERT, folder / CA_KEY)
            made = {
                "server": make_server_certificate(args.out, ca=ca, hosts=args.host, days=args.days)
            }
        elif args.command == "node":
            made = {args.name: make_node_keys(args.out, args.name)}
        else:
            made = make_all(args.out, hosts=args.host, nodes=args.node)
    except CertificateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, pair in made.items():
        print(f"{name}: {pair.public}  (private: {pair.private}, mode 0600)")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m fl_server.certs"))
