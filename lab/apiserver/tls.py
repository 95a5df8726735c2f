"""A self-signed serving certificate for the Kubernetes API test server (`serve --self-signed-tls`).

The certificate names the serving host in its subjectAltName (an IP address SAN for an IP
host, a DNS SAN for a name; a wildcard bind address such as 0.0.0.0 gets the loopback
addresses and `localhost` instead), is its own CA (basicConstraints CA:TRUE, critical, with
subject and authority key identifiers, as OpenSSL's strict verification and Go's crypto/x509
want), and is valid from a day ago for 30 days. Clients trust it by naming the certificate
file as their CA (kubeconfig `certificate-authority`), with no need to skip verification.

Made with the `cryptography` package. The key (EC P-256, PKCS#8 PEM) is readable by its owner
only (0600) from the moment it exists.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_NAME = "tls.crt"
KEY_NAME = "tls.key"
COMMON_NAME = "fleet-test-apiserver"
VALID_DAYS = 30


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def subject_alt_names(host: str) -> list[str]:
    """The SANs for serving on `host`, as OpenSSL writes them: `IP:1.2.3.4`, `DNS:name`."""
    address = _ip(host)
    if address is None:
        return [f"DNS:{host}"]
    if address.is_unspecified:  # bound to every address: clients come in over loopback
        return ["IP:127.0.0.1", "IP:::1", "DNS:localhost"]
    return [f"IP:{address}"]


def _write_private(path: Path, content: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(content)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def _certificate(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    sans: list[x509.GeneralName] = []
    for san in subject_alt_names(host):
        kind, _, value = san.partition(":")
        sans.append(x509.IPAddress(ipaddress.ip_address(value)) if kind == "IP" else x509.DNSName(value))
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def self_signed_certificate(directory: str | Path, host: str) -> tuple[Path, Path]:
    """Write DIR/tls.crt and DIR/tls.key (0600) for serving on `host`; returns their paths.

    Existing files are replaced; the directory is made (0700) when missing."""
    cert_pem, key_pem = _certificate(host)
    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert, key = folder / CERT_NAME, folder / KEY_NAME
    temporary = folder / f".{KEY_NAME}.{os.getpid()}.tmp"
    try:
        _write_private(temporary, key_pem)
        temporary.replace(key)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    cert.write_bytes(cert_pem)
    return cert, key
