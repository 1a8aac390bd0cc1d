"""Tests of swarmctl.tls: the cluster CA and the certificates a coordinator issues itself."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509

from swarmctl.errors import UsageError
from swarmctl.tls import client_context, create_ca, server_context, server_hosts


@pytest.fixture
def ca(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "ca.pem", tmp_path / "ca.key"
    create_ca(cert, key)
    return cert, key


def test_tls_ca_files_and_modes(ca) -> None:
    cert, key = ca

    certificate = x509.load_pem_x509_certificate(cert.read_bytes())

    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert key.stat().st_mode & 0o777 == 0o600
    assert cert.stat().st_mode & 0o777 == 0o644


def test_tls_ca_not_overwritten(ca) -> None:
    cert, key = ca

    with pytest.raises(UsageError, match="already exists"):
        create_ca(cert, key)


def test_tls_server_certificate_names(ca, tmp_path: Path) -> None:
    cert, key = ca

    server_context(cert, key, ["10.0.0.5", "coordinator.example"], tmp_path / "tls")

    pem = (tmp_path / "tls" / "server.pem").read_bytes()
    certificate = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE"):])
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert names.get_values_for_type(x509.DNSName) == ["coordinator.example"]
    assert certificate.issuer == x509.load_pem_x509_certificate(cert.read_bytes()).subject
    assert (tmp_path / "tls" / "server.pem").stat().st_mode & 0o777 == 0o600


def test_tls_key_of_other_ca_rejected(ca, tmp_path: Path) -> None:
    cert, _ = ca
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other.key"
    create_ca(other_cert, other_key)

    with pytest.raises(UsageError, match="is not the key of the CA certificate"):
        server_context(cert, other_key, ["localhost"], tmp_path / "tls")


def test_tls_missing_ca_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        client_context(tmp_path / "missing.pem")


def test_tls_server_hosts() -> None:
    hosts = server_hosts("0.0.0.0", "10.0.0.5")

    assert "10.0.0.5" in hosts
    assert "127.0.0.1" in hosts
    assert "0.0.0.0" not in hosts
