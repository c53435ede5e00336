"""The OPC UA driver's security settings against the packaging line served secured.

The simulator offers only Basic256Sha256 Sign and SignAndEncrypt endpoints and
trusts the client certificates in one folder, as a PLC's OPC UA server does.
Certificates are made here: with asyncua's generator, and with the openssl
command the driver README gives.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from drivers.base import ConfigError, DeviceUnavailable
from drivers.opcua import SPEC
from drivers.opcua.driver import OpcuaDriver
from simulators.packaging_line import (
    SERVER_URI,
    VARIABLES,
    LineHandle,
    ServerSecurity,
    node_id,
    run_packaging_line,
)
from tests.support.tools import require

LIMIT = 20.0  # generous bound on every wait: a loaded 2-core box must not flake
CLIENT_URI = "urn:edge-agent:client"  # the driver's default application_uri
BOX_URI = "urn:edge-agent:line-a-box-1"
USERS = {"maint": "s3cret"}

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass(frozen=True)
class Pki:
    """Every file the tests use, made once per module."""

    server_cert: Path
    server_key: Path
    trusted: Path
    client_cert: Path  # DER, trusted, carries CLIENT_URI
    client_key: Path
    stranger_cert: Path  # well-formed, same URI, not trusted
    stranger_key: Path
    box_cert: Path  # the README's openssl recipe: PEM in a .crt, trusted, carries BOX_URI
    box_key: Path


def _self_signed(folder: Path, name: str, uri: str, use: x509.ObjectIdentifier) -> Path:
    """A certificate (DER) and its key (PEM, ``<name>.key.pem``) made with asyncua's generator."""
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(uri),
        x509.DNSName(socket.gethostname()),
        x509.DNSName("localhost"),
    ]
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {}, names, [use])
    (folder / f"{name}.key.pem").write_bytes(cert_gen.dump_private_key_as_pem(key))
    path = folder / f"{name}.der"
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return path


def _openssl_client(folder: Path, uri: str) -> tuple[Path, Path]:
    """The command in drivers/opcua/README.md, word for word but for the paths."""
    cert, key = folder / "box.crt", folder / "box.key"
    subprocess.run(
        [
            require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", "825", "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=edge-agent line-a-box-1",
            "-addext", f"subjectAltName=URI:{uri},DNS:{socket.gethostname()}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,digitalSignature,nonRepudiation,"
            "keyEncipherment,dataEncipherment,keyCertSign",
            "-addext", "extendedKeyUsage=clientAuth",
        ],
        check=True,
        capture_output=True,
        timeout=LIMIT,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    trusted = folder / "trusted"
    trusted.mkdir()
    server = _self_signed(folder, "server", SERVER_URI, ExtendedKeyUsageOID.SERVER_AUTH)
    client = _self_signed(folder, "client", CLIENT_URI, ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger = _self_signed(folder, "stranger", CLIENT_URI, ExtendedKeyUsageOID.CLIENT_AUTH)
    box_cert, box_key = _openssl_client(folder, BOX_URI)
    shutil.copy(client, trusted / "client.der")
    shutil.copy(box_cert, trusted / "box.pem")  # the trust list reads *.der and *.pem
    return Pki(
        server_cert=server,
        server_key=folder / "server.key.pem",
        trusted=trusted,
        client_cert=client,
        client_key=folder / "client.key.pem",
        stranger_cert=stranger,
        stranger_key=folder / "stranger.key.pem",
        box_cert=box_cert,
        box_key=box_key,
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def line(pki: Pki) -> AsyncIterator[LineHandle]:
    security = ServerSecurity(pki.server_cert, pki.server_key, trusted=pki.trusted)
    async with run_packaging_line(tick=None, users=USERS, security=security) as handle:
        await handle.advance(5.0)
        yield handle


def _driver(endpoint: str, **conn: Any) -> OpcuaDriver:
    tags = {name: {"node": node_id(name)} for name in VARIABLES}
    options = SPEC.parse(
        {"connection": {"opcua": {"endpoint": endpoint, "timeout": "2s", **conn}}, "tags": tags}
    )
    driver = SPEC.create("line-1", options)
    assert isinstance(driver, OpcuaDriver)
    return driver


def _secured(pki: Pki, mode: str = "SignAndEncrypt", **conn: Any) -> dict[str, Any]:
    settings = {
        "security_policy": "Basic256Sha256",
        "security_mode": mode,
        "certificate": str(pki.client_cert),
        "private_key": str(pki.client_key),
    }
    return settings | conn


async def _refusal(driver: OpcuaDriver) -> str:
    """The DeviceUnavailable message of a connect that must fail (never a hang)."""
    with pytest.raises(DeviceUnavailable, match="connect to") as info:
        await asyncio.wait_for(driver.connect(), LIMIT)
    await driver.close()
    return str(info.value)


async def test_the_secured_simulator_offers_no_endpoint_without_security(line: LineHandle) -> None:
    client = Client(line.endpoint, timeout=LIMIT)
    endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), LIMIT)
    offered = {(e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode) for e in endpoints}
    assert offered == {
        ("Basic256Sha256", ua.MessageSecurityMode.Sign),
        ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt),
    }


async def test_the_secured_simulator_serves_no_session_on_an_unsecured_channel(
    line: LineHandle,
) -> None:
    # A client that ignores the endpoint list and stays on the unsecured channel
    # kept open for discovery: it may create a session, never activate one.
    client = Client(line.endpoint, timeout=LIMIT)
    await asyncio.wait_for(client.connect_socket(), LIMIT)
    try:
        await asyncio.wait_for(client.send_hello(), LIMIT)
        await asyncio.wait_for(client.open_secure_channel(), LIMIT)
        params = ua.CreateSessionParameters()
        params.ClientDescription.ApplicationUri = CLIENT_URI
        params.ClientDescription.ApplicationType = ua.ApplicationType.Client
        params.EndpointUrl = line.endpoint
        params.RequestedSessionTimeout = 10_000
        params.ClientNonce = bytes(32)
        await asyncio.wait_for(client.uaclient.create_session(params), LIMIT)
        for user, password in ((None, None), ("maint", "s3cret")):  # anonymous, then a user
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await asyncio.wait_for(client.activate_session(user, password), LIMIT)
    finally:
        client.disconnect_socket()


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_poll_read_over_a_secured_channel(line: LineHandle, pki: Pki, mode: str) -> None:
    async with _driver(line.endpoint, **_secured(pki, mode)) as driver:
        reading = await driver.read("default")
        session = driver._session
        assert session is not None
        assert session.client.security_policy.Mode == getattr(ua.MessageSecurityMode, mode)
    assert reading.errors == {}
    for name in VARIABLES:
        assert reading.values[name] == await line.value(name), name


async def test_client_without_certificate_is_refused_clearly(line: LineHandle) -> None:
    message = await _refusal(_driver(line.endpoint))
    assert "no endpoint with security_policy None and security_mode None" in message


async def test_untrusted_certificate_is_refused(line: LineHandle, pki: Pki) -> None:
    stranger = _secured(pki, certificate=str(pki.stranger_cert), private_key=str(pki.stranger_key))
    message = await _refusal(_driver(line.endpoint, **stranger))
    assert message.endswith("BadCertificateUntrusted")


async def test_username_and_password_over_sign_and_encrypt(line: LineHandle, pki: Pki) -> None:
    user = _secured(pki, username="maint", password="s3cret")
    async with _driver(line.endpoint, **user) as driver:
        reading = await driver.read("default")
    assert reading.values["RecipeName"] == await line.value("RecipeName")
    wrong = _secured(pki, username="maint", password="nope")
    message = await _refusal(_driver(line.endpoint, **wrong))
    assert message.endswith("BadUserAccessDenied")
    assert "nope" not in message


async def test_openssl_certificate_in_pem_files_with_any_suffix(line: LineHandle, pki: Pki) -> None:
    # box.crt / box.key are PEM: asyncua alone would parse a .crt as DER and fail.
    # The server certificate is pinned, so no endpoint list is fetched first.
    box = _secured(
        pki,
        certificate=str(pki.box_cert),
        private_key=str(pki.box_key),
        application_uri=BOX_URI,
        server_certificate=str(pki.server_cert),
    )
    async with _driver(line.endpoint, **box) as driver:
        reading = await driver.read("default")
    assert reading.values["StateCurrent"] == await line.value("StateCurrent")


async def test_application_uri_must_be_the_certificates(line: LineHandle, pki: Pki) -> None:
    other = _secured(pki, application_uri="urn:edge-agent:other")
    message = await _refusal(_driver(line.endpoint, **other))
    assert f"carries {CLIENT_URI} in its subjectAltName" in message
    assert "not application_uri urn:edge-agent:other" in message


async def test_unusable_key_files_are_named(line: LineHandle, pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
    encrypted = tmp_path / "locked.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    cases = {
        str(encrypted): f"private key {encrypted} is encrypted",
        str(pki.stranger_key): f"does not belong to certificate {pki.client_cert}",
        str(tmp_path / "absent.pem"): f"cannot read private key {tmp_path / 'absent.pem'}",
    }
    for path, expected in cases.items():
        message = await _refusal(_driver(line.endpoint, **_secured(pki, private_key=path)))
        assert expected in message


async def test_pinned_certificate_that_is_not_the_servers_fails_within_the_timeout(
    line: LineHandle, pki: Pki
) -> None:
    # The server cannot decrypt what was encrypted for another certificate and
    # drops it without an answer: the driver must give up on its own.
    pinned = _secured(pki, server_certificate=str(pki.stranger_cert), timeout="1s")
    message = await _refusal(_driver(line.endpoint, **pinned))
    assert "no answer within 1s" in message
    # The server keeps serving everyone else.
    async with _driver(line.endpoint, **_secured(pki)) as driver:
        assert (await driver.read("default")).errors == {}


async def test_certificate_files_without_a_policy_are_a_config_error(pki: Pki) -> None:
    # Otherwise the box would connect unsecured while its config names a certificate.
    conn = {"endpoint": "opc.tcp://127.0.0.1:4840", "certificate": str(pki.client_cert)}
    with pytest.raises(ConfigError, match="used only with security_policy Basic256Sha256"):
        SPEC.parse({"connection": {"opcua": conn}, "tags": {}})
