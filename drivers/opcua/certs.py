"""Load and check the client certificate, key and pinned server certificate.

asyncua picks PEM or DER by file suffix only (``client.crt`` in PEM fails as
DER), only logs a warning when the certificate does not carry our
ApplicationUri (the server then refuses the session with a bare status code),
and lets an encrypted key escape as a ``TypeError``. So the files are read
and checked here first, and each problem gets a sentence that names the file
and the fix. Called from ``connect()`` (in a thread: it reads files); raises
:class:`CertificateProblem`, which the driver reports as ``DeviceUnavailable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

_PEM = b"-----BEGIN"
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class CertificateProblem(ValueError):
    """A certificate or key file is unreadable, malformed or does not fit the config."""


@dataclass(frozen=True, slots=True)
class Material:
    """A file's bytes and the format asyncua must parse them with (``pem`` or ``der``)."""

    content: bytes
    format: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """What ``Client.set_security`` needs, checked."""

    certificate: Material
    private_key: Material
    server_certificate: Material | None


def load_credentials(
    certificate: Path, private_key: Path, server_certificate: Path | None, application_uri: str
) -> Credentials:
    """Read the files and check they can open a Basic256Sha256 channel as ``application_uri``."""
    cert_file, cert = _certificate(certificate)
    uris = _uris(cert)
    if application_uri not in uris:
        found = ", ".join(uris) or "no URI"
        raise CertificateProblem(
            f"certificate {certificate} carries {found} in its subjectAltName, not"
            f" application_uri {application_uri}: set application_uri to the certificate's URI"
            " or issue a certificate for it"
        )
    key_file = _read(private_key, "private key")
    key = _private_key(private_key, key_file)
    if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        raise CertificateProblem(
            f"private key {private_key} does not belong to certificate {certificate}"
        )
    pinned = _certificate(server_certificate)[0] if server_certificate else None
    return Credentials(cert_file, key_file, pinned)


def _read(path: Path, what: str) -> Material:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise CertificateProblem(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return Material(content, "pem" if content.lstrip().startswith(_PEM) else "der")


def _certificate(path: Path) -> tuple[Material, x509.Certificate]:
    material = _read(path, "certificate")
    try:
        if material.format == "pem":
            cert = x509.load_pem_x509_certificate(material.content)
        else:
            cert = x509.load_der_x509_certificate(material.content)
    except ValueError:
        raise CertificateProblem(
            f"{path} is not an X.509 certificate in PEM or DER format"
        ) from None
    return material, cert


def _private_key(path: Path, material: Material) -> rsa.RSAPrivateKey:
    try:
        if material.format == "pem":
            key = serialization.load_pem_private_key(material.content, password=None)
        else:
            key = serialization.load_der_private_key(material.content, password=None)
    except TypeError:
        # cryptography's way of saying the key needs a password.
        raise CertificateProblem(
            f"private key {path} is encrypted: give an unencrypted key"
            " (protect the file with its permissions)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateProblem(f"{path} is not a private key in PEM or DER format") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateProblem(f"private key {path} is not an RSA key (Basic256Sha256 needs RSA)")
    return key


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(uri) for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier)]
