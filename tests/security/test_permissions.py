"""A site file, password file or TLS key readable by every user is warned about.

``edge-agent validate`` prints the warning, ``edge-agent run`` logs it at
start-up; both name the file and the fix (``chmod 640 FILE``) and go on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from agent.site.loader import load_site
from agent.site.permissions import readable_by_others
from tests.security.support import wait_until
from tests.support.agentproc import AgentProcess, site_dict
from tests.support.mosquitto import TestCerts


def _site_with_secrets(tmp_path: Path, certs: TestCerts, mode: int) -> tuple[Path, list[Path]]:
    """A site file naming a password file and a TLS key, all three with ``mode``."""
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("pw-123\n", encoding="utf-8")
    key = tmp_path / "client.key"
    shutil.copy(certs.client_key, key)
    tls = {"ca": str(certs.ca), "cert": str(certs.client_cert), "key": "client.key"}
    mqtt = {"username": "box", "password_file": "mqtt-password", "tls": tls}
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(site_dict("perm-box", 1, [], mqtt=mqtt)), encoding="utf-8")
    files = [site, password_file, key]
    for path in files:
        path.chmod(mode)
    return site, files


def test_each_file_readable_by_others_gets_a_warning_with_the_fix(
    tmp_path: Path, certs: TestCerts
) -> None:
    site_file, files = _site_with_secrets(tmp_path, certs, 0o644)
    warnings = readable_by_others(load_site(site_file))
    assert len(warnings) == 3, warnings
    for path, warning in zip(files, warnings, strict=True):
        assert str(path) in warning
        assert warning.endswith(f"chmod 640 {path}")
    for path in files:
        path.chmod(0o640)
    assert readable_by_others(load_site(site_file)) == []


def test_validate_prints_the_warnings(tmp_path: Path, certs: TestCerts) -> None:
    site_file, files = _site_with_secrets(tmp_path, certs, 0o604)
    agent = AgentProcess(tmp_path / "unused", {})
    shown = agent.command("validate", "-c", str(site_file))
    assert shown.returncode == 0, shown.stderr
    for path in files:
        assert f"chmod 640 {path}" in shown.stderr
    for path in files:
        path.chmod(0o600)
    quiet = agent.command("validate", "-c", str(site_file))
    assert quiet.returncode == 0, quiet.stderr
    assert "chmod" not in quiet.stderr


def test_run_logs_a_warning_at_start_up(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path, site_dict("perm-box", 1, []))
    agent.site_file.chmod(0o644)
    try:
        agent.start()
        wait_until(lambda: "started" in agent.log(), 20, "start-up")
        log = agent.log()
        agent.kill()  # no broker: a clean stop would wait its drain time
    finally:
        agent.__exit__(None, None, None)
    warned = [line for line in log.splitlines() if "chmod 640" in line]
    assert len(warned) == 1, log
    assert "WARNING" in warned[0]
    assert warned[0].endswith(f"chmod 640 {agent.site_file}")


def test_the_opcua_client_private_key_readable_by_others_is_warned_about(
    tmp_path: Path,
) -> None:
    """The OPC UA client key is the box's identity toward the server, like the TLS key."""
    for name in ("client.der", "client.key.pem"):
        (tmp_path / name).write_bytes(b"not checked by validation")
        (tmp_path / name).chmod(0o644)
    secured = {
        "endpoint": "opc.tcp://127.0.0.1:4840",
        "security_policy": "Basic256Sha256",
        "security_mode": "SignAndEncrypt",
        "certificate": str(tmp_path / "client.der"),
        "private_key": str(tmp_path / "client.key.pem"),
    }
    device = {"id": "line-1", "profile": "packml-line", "connection": {"opcua": secured}}
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(site_dict("perm-box", 1, [device])), encoding="utf-8")
    site_file.chmod(0o600)
    key = tmp_path / "client.key.pem"
    warnings = readable_by_others(load_site(site_file))
    assert len(warnings) == 1, warnings  # the certificate is public: no warning
    assert str(key) in warnings[0]
    assert "line-1" in warnings[0]
    assert warnings[0].endswith(f"chmod 640 {key}")
    key.chmod(0o640)
    assert readable_by_others(load_site(site_file)) == []
