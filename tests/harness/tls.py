"""Test certificates: a certificate authority and the server certificates it signs (registries, package indexes,
Pebble's own HTTPS), and self-signed ones (the front's certificate files). One builder for all of them."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TestCA:
    """A CA's certificate (PEM, the file to trust) and a server certificate and key it signed."""

    ca: Path
    certificate: Path
    key: Path


def _names(hosts: list[str]) -> list[Any]:
    """Subject alternative names: IP literals as addresses, anything else as DNS names."""
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _certificate(
    subject: str, key: Any, *, hosts: list[str] | None = None, issuer: Any = None, issuer_key: Any = None, days: int = 2
) -> Any:
    """A certificate for ``key`` named ``subject``: a CA's (no ``hosts``), else a server's for ``hosts``, signed by
    ``issuer`` (its certificate) with ``issuer_key``, or by itself when there is no issuer."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    if not hosts:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        if issuer is not None:
            builder = (
                builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
            )
    return builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, certificate: Any = None, key: Any = None) -> Path:
    from cryptography.hazmat.primitives import serialization

    if certificate is not None:
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        path.chmod(0o600)
    return path


def make_ca(folder: Path, name: str, hosts: list[str]) -> TestCA:
    """A fresh CA named ``name`` (nobody else trusts it) and a certificate for ``hosts`` (IP literals or DNS names)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, key = _key(), _key()
    ca = _certificate(f"warptasks test CA: {name}", ca_key)
    certificate = _certificate(hosts[0], key, hosts=hosts, issuer=ca, issuer_key=ca_key, days=1)
    return TestCA(
        _write(folder / "ca.crt", ca), _write(folder / "server.crt", certificate), _write(folder / "server.key", key=key)
    )


def self_signed(folder: Path, name: str, tag: str) -> tuple[Path, Path, bytes]:
    """A self-signed certificate for ``name`` and its key, as files ``<tag>.crt`` and ``<tag>.key``; (cert, key, DER)."""
    from cryptography.hazmat.primitives import serialization

    key = _key()
    certificate = _certificate(f"{name} ({tag})", key, hosts=[name])
    cert_path = _write(folder / f"{tag}.crt", certificate)
    key_path = _write(folder / f"{tag}.key", key=key)
    return cert_path, key_path, certificate.public_bytes(serialization.Encoding.DER)
