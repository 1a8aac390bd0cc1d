"""TLS for the coordinator's port: a cluster CA, and server certificates made from it at start.

``swarmctl init`` makes a cluster CA (an ECDSA P-256 key and a self-signed certificate
valid for 10 years). A coordinator given the CA's certificate and key issues itself a
server certificate at every start, for the addresses it can be reached at, so no
certificate has to be made per machine. Executors and clients get only the CA
certificate: they check that the coordinator's certificate was signed by the cluster CA
and names the host they connected to, as any TLS client does.

The CA key can sign a certificate for any name, so it belongs only on coordinator
machines, like the cluster secret.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swarmctl.errors import UsageError

log = logging.getLogger(__name__)

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=365)
CLOCK_SKEW = datetime.timedelta(hours=1)  # certificates start this early, for nodes whose clocks lag


def create_ca(cert_path: Path, key_path: Path, *, name: str = "swarmctl cluster CA") -> None:
    """Write a new CA certificate (mode 0644) and its key (mode 0600); neither file may exist yet."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_new(key_path, _key_pem(key), 0o600)
    _write_new(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def server_context(ca_cert_path: Path, ca_key_path: Path, hosts: Iterable[str], folder: Path) -> ssl.SSLContext:
    """Issue a server certificate for ``hosts`` from the CA and return a server context that presents it.

    The certificate and its key are written to ``folder/server.pem`` (mode 0600), because the
    ssl module loads certificates from files only.
    """
    ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    names = sorted(set(hosts))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "swarmctl")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "server.pem"
    path.unlink(missing_ok=True)
    _write_new(path, _key_pem(key) + certificate.public_bytes(serialization.Encoding.PEM), 0o600)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(path)
    log.info("TLS certificate issued by %s for %s", ca_cert.subject.rfc4514_string(), ", ".join(names))
    return context


def client_context(ca_cert_path: Path) -> ssl.SSLContext:
    """Return a client context that trusts only the cluster CA and checks the host name."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert_path))
    except FileNotFoundError:
        raise UsageError(f"CA certificate {ca_cert_path} not found; copy ca.pem from the folder `swarmctl init` wrote") from None
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load CA certificate {ca_cert_path}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_hosts(listen_host: str, advertise: str | None) -> list[str]:
    """Return the names and addresses a coordinator's certificate covers."""
    hosts = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()}
    if listen_host not in ("0.0.0.0", "::", ""):
        hosts.add(listen_host)
    if advertise:
        hosts.add(advertise)
    return sorted(host for host in hosts if host)


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise UsageError(f"{exc.filename} not found; `swarmctl init DIR` writes {CA_CERT_FILE} and {CA_KEY_FILE}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the cluster CA from {cert_path} and {key_path}: {exc}") from None
    if key.public_key().public_numbers() != certificate.public_key().public_numbers():
        raise UsageError(f"{key_path} is not the key of the CA certificate {cert_path}")
    return certificate, key


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except FileExistsError:
        raise UsageError(f"{path} already exists; remove it first or choose another folder") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)
