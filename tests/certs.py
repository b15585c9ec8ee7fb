"""X.509 test certificates for TLS servers on 127.0.0.1, built with ``cryptography``.

Every certificate here uses an ECDSA P-256 key, is signed with SHA-256 and is valid from one
day ago to one day from now, so a clock a little off never fails a test. A server
certificate names 127.0.0.1 both as its common name and as an IP-address
subjectAltName, which is what TLS clients check a ``wss://127.0.0.1`` URL against.

``cryptography`` is imported inside the functions, so modules that import this one load
without it; each function says what happens when it is missing.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

SERVER_HOST = "127.0.0.1"


def write_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA: ``BasicConstraints(ca=True)``, so a
    client can trust it as a ``ca_file``) and its key, written as ``cert.pem`` and ``key.pem``
    under ``directory``: ``(cert path, key path)``. Skips the test without ``cryptography``."""
    pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(SERVER_HOST, key, issuer=SERVER_HOST, signer=key, ca=True, server=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    _write_pem(cert, key, cert_path, key_path)
    return cert_path, key_path


def ca_and_server_context(
    directory: Path, ca_name: str = "streamkit test CA"
) -> tuple[Path, ssl.SSLContext]:
    """A private CA called ``ca_name`` and a server certificate for 127.0.0.1 it signed:
    ``(CA file, server context)``.

    The CA certificate is written to ``directory / "ca.pem"`` (what a client passes as its
    ``ca_file``); the server certificate and key to ``server.pem`` and ``server.key``, from
    which the returned ``ssl.Purpose.CLIENT_AUTH`` context loads its chain. The server
    certificate is not itself a CA, so only trusting ``ca.pem`` verifies it. Raises
    ``ImportError`` without ``cryptography`` (the callers' tests cannot mean anything
    without it, so they fail rather than skip)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(ca_name, ca_key, issuer=ca_name, signer=ca_key, ca=True, server=False)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(SERVER_HOST, key, issuer=ca_name, signer=ca_key, ca=False, server=True)

    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    _write_pem(cert, key, cert_path, key_path)
    # ssl only loads a certificate chain from files, hence the files even for the server.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return ca_path, context


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: str,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
    server: bool,
) -> x509.Certificate:
    """A certificate for ``key`` with common name ``subject``, issued by common name
    ``issuer`` and signed by ``signer``; marked a CA (critical ``BasicConstraints``) when
    ``ca``, and carrying the 127.0.0.1 IP subjectAltName when ``server``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
    )
    if server:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(SERVER_HOST))])
        builder = builder.add_extension(san, critical=False)
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    return builder.sign(signer, hashes.SHA256())


def _write_pem(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path, key_path: Path
) -> None:
    """``cert`` and its unencrypted PKCS#8 ``key`` as PEM files."""
    from cryptography.hazmat.primitives import serialization

    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
