"""Unit tests of secret handling: the log filter, ``Site.secrets``, masked config errors."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.logs import _Redact
from agent.secretmask import is_secret_key, mask
from agent.site.loader import load_site
from agent.site.source import ConfigFileError

SECRET = "Hunter2-xyz"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose lines go through the redaction filter into a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(_Redact(frozenset({SECRET, "ab"})))
    log = logging.getLogger("tests.security.redaction")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        yield log, out
    finally:
        log.removeHandler(handler)


def test_a_secret_in_the_message_or_its_arguments_is_masked(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logged
    log.warning("login with %s failed", SECRET)
    log.info(f"literal {SECRET} in the format string")  # noqa: G004 - what a careless caller does
    log.debug("options %r", {"password": SECRET})
    text = out.getvalue()
    assert SECRET not in text
    assert "login with *** failed" in text
    assert "literal *** in the format string" in text
    assert "{'password': '***'}" in text


def test_a_secret_in_a_traceback_is_masked(logged: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logged
    try:
        raise ValueError(f"bad password {SECRET}")
    except ValueError:
        log.exception("connect failed")
    text = out.getvalue()
    assert "Traceback" in text
    assert "bad password ***" in text
    assert SECRET not in text


def test_short_secrets_and_clean_lines_are_left_alone(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logged
    log.info("table abc has %d rows", 3)  # "ab" is too short to mask without garbling
    assert out.getvalue() == "INFO table abc has 3 rows\n"


def test_mask_catches_the_repr_spelling() -> None:
    for tricky in ("it's\\secret", "both ' and \" quotes"):
        assert mask(f"value {tricky!r}", [tricky]) in ("value '***'", 'value "***"')
    assert mask("nothing here", [tricky]) == "nothing here"


def test_secret_keys() -> None:
    assert all(map(is_secret_key, ("password", "Password", "api_token", "client_secret")))
    assert not any(map(is_secret_key, ("password_file", "username", "tokens_per_s", 3)))


def _write(tmp_path: Path, mqtt: str, devices: str = "[]") -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(
        f"agent: {{id: box, data_dir: data}}\nmqtt: {mqtt}\ndevices: {devices}\n",
        encoding="utf-8",
    )
    return site


def test_site_secrets_hold_env_file_and_literal_passwords(tmp_path: Path) -> None:
    from_env = load_site(
        _write(tmp_path, "{username: u, password: '${PW}'}"), env={"PW": "from-env-pw"}
    )
    assert from_env.secrets == {"from-env-pw"}
    assert from_env.mqtt_password == "from-env-pw"

    (tmp_path / "pw.txt").write_text("from-file-pw\n", encoding="utf-8")
    from_file = load_site(_write(tmp_path, "{username: u, password_file: pw.txt}"), env={})
    assert from_file.secrets == {"from-file-pw"}, "the path of the file is no secret"

    opcua = (
        "[{id: ua, connection: {opcua: {endpoint: 'opc.tcp://h:4840', username: op, "
        "password: opcua-literal}}, tags: {x: {node: 'ns=2;s=x'}}}]"
    )
    literal = load_site(_write(tmp_path, "{username: u, password: literal-pw}", opcua), env={})
    assert literal.secrets == {"literal-pw", "opcua-literal"}
    for site in (from_env, from_file, literal):
        assert all(secret not in repr(site) for secret in site.secrets)


def test_config_errors_do_not_quote_a_secret(tmp_path: Path) -> None:
    # a check spanning the section quotes all of it; a wrong type quotes the value
    site = _write(tmp_path, "{password: '${PW}', password_file: x}")
    with pytest.raises(ConfigFileError) as caught:
        load_site(site, env={"PW": "env-secret-pw"})
    assert "give password or password_file" in str(caught.value)
    assert "env-secret-pw" not in str(caught.value)
    with pytest.raises(ConfigFileError) as caught:
        load_site(_write(tmp_path, "{password: 987654321}"), env={})
    assert "mqtt.password: ***:" in str(caught.value)
    assert "987654321" not in str(caught.value)
