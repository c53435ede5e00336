"""``edge-agent init``: a new site file copied from a sample site, asking only what differs.

A factory of the same industry has the same equipment as the sample factory:
the same profiles, tags and overrides. What differs is who the box is (agent
id), where it publishes (broker, credentials) and where each device sits on
the network (host, serial port, endpoint). This module copies the sample with
a round-trip YAML parser (comments, key order and flow style survive) and
changes only those values, from flags (``--set``, ``--broker``...) or answers.
Secrets are never asked for or written: the file gets a ``${ENV}`` reference.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import typer
import yaml as pyyaml
from ruamel.yaml import YAML

from agent.cli.common import EXIT_INPUT, print_summary
from agent.errors import InitError
from drivers.base import EditsAddress

Ask = Callable[[str, str], str]
"""``ask(question, default) -> answer``; ``None`` instead of an Ask means ``--yes``."""

STATE_KEYS: Final[tuple[tuple[str, ...], ...]] = (
    ("agent", "data_dir"),
    ("agent", "status_socket"),
    ("buffer", "path"),
)
FILE_KEYS: Final[tuple[tuple[str, ...], ...]] = (
    ("mqtt", "password_file"),
    ("mqtt", "tls", "ca"),
    ("mqtt", "tls", "cert"),
    ("mqtt", "tls", "key"),
)
_ADDRESS_KEYS: Final = ("host", "port", "endpoint")
"""Keys that ``--set devices.ID.KEY=...`` means inside the device's connection."""
DEFAULT_PASSWORD_ENV: Final = "MQTT_PASSWORD"  # noqa: S105 - a variable's name, no secret
NO_ANSWER: Final = (
    "no answer to {question!r}: nothing to read (stdin is not a terminal). Run it in a"
    " terminal, or with --yes to keep the sample's values and give what differs as flags:"
    " --site AGENT_ID, --broker HOST:PORT, --username NAME, --password-env VAR,"
    " --set devices.ID.host=ADDRESS (repeatable)"
)
"""What ``init`` says when it must ask but cannot: which flags answer instead."""


@dataclass
class InitRequest:
    """What ``edge-agent init`` was asked to do."""

    sample: Path
    output: Path
    site_id: str | None = None
    sets: list[str] = field(default_factory=list)
    broker: str | None = None
    username: str | None = None
    password_env: str | None = None
    force: bool = False


@dataclass
class InitResult:
    """What was written, and the ``${VAR}`` references the box must provide."""

    output: Path
    notes: list[str]
    env_refs: list[str]


def _yaml() -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap a contractor's long lines
    rt.indent(mapping=2, sequence=4, offset=2)
    return rt


def copy_site(request: InitRequest, ask: Ask | None) -> InitResult:
    """Write ``request.output`` from ``request.sample``; ``ask`` is ``None`` with ``--yes``."""
    if request.output.exists() and not request.force:
        raise InitError(f"{request.output} exists; choose another name or pass --force")
    try:
        data: Any = _yaml().load(request.sample.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InitError(f"cannot read {request.sample}: {exc.strerror}") from None
    if not isinstance(data, dict) or not isinstance(data.get("agent"), dict):
        raise InitError(f"{request.sample} is not a site file (no agent section)")
    notes: list[str] = []
    env_refs: list[str] = []
    touched = {_apply_set(data, assignment) for assignment in request.sets}
    _agent_id(data, request, ask, touched)
    _broker(data, request, ask, touched)
    _credentials(data, request, ask, env_refs, notes)
    _addresses(data, ask, touched)
    _paths(data, request, touched, notes)
    out = io.StringIO()
    _yaml().dump(data, out)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    header = f"# Copied from {request.sample.name} by edge-agent init on {stamp}.\n"
    request.output.write_text(header + out.getvalue(), encoding="utf-8")
    return InitResult(request.output, notes, env_refs)


def _apply_set(data: Any, assignment: str) -> str:
    """Apply ``a.b.c=value``; returns the dotted path it set (device paths normalised)."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise InitError(f"--set {assignment!r}: expected PATH=VALUE, e.g. devices.m1.host=10.0.0.5")
    value = pyyaml.safe_load(raw) if raw.strip() else ""
    parts = path.split(".")
    node: Any = data
    if parts[0] == "devices":
        node, rest, device_id = _device(data, parts[1:], assignment)
        parts = _device_key(node, rest)
        path = ".".join(["devices", device_id, *parts])
    for key in parts[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[parts[-1]] = value
    return path


def _device(data: Any, parts: list[str], assignment: str) -> tuple[Any, list[str], str]:
    devices = data.get("devices") or []
    by_id = {str(d.get("id")): d for d in devices if isinstance(d, dict)}
    # Device ids may hold dots: take the longest prefix that names a device.
    for cut in range(len(parts) - 1, 0, -1):
        device_id = ".".join(parts[:cut])
        if device_id in by_id:
            return by_id[device_id], parts[cut:], device_id
    known = ", ".join(by_id) or "none"
    raise InitError(f"--set {assignment!r}: no such device (devices: {known})")


def _device_key(device: Any, rest: list[str]) -> list[str]:
    """``host`` alone means the host of the device's one connection."""
    connection = device.get("connection")
    if len(rest) == 1 and rest[0] not in device and isinstance(connection, dict) and connection:
        kind = next(iter(connection))
        if rest[0] in (connection[kind] or {}) or rest[0] in _ADDRESS_KEYS:
            return ["connection", str(kind), rest[0]]
    return rest


def _agent_id(data: Any, request: InitRequest, ask: Ask | None, touched: set[str]) -> None:
    old = str(data["agent"].get("id", ""))
    new = request.site_id
    if new is None and "agent.id" in touched:
        new = str(data["agent"]["id"])
    if new is None:
        if ask is None:
            raise InitError("give the new agent id with --site (it must differ from the sample's)")
        new = ask("Agent id of the new box (unique, used in MQTT topics)", "")
    if not new or new == old:
        raise InitError(f"the new agent id must differ from the sample's ({old!r})")
    data["agent"]["id"] = new


def _broker(data: Any, request: InitRequest, ask: Ask | None, touched: set[str]) -> None:
    mqtt = data.setdefault("mqtt", {})
    current = f"{mqtt.get('host', '127.0.0.1')}:{mqtt.get('port', 1883)}"
    broker = request.broker
    if broker is None and ask is not None and not {"mqtt.host", "mqtt.port"} & touched:
        broker = ask("MQTT broker HOST:PORT", current)
    if broker is None or broker == current:
        return
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        raise InitError(f"broker {broker!r}: expected HOST:PORT")
    mqtt["host"], mqtt["port"] = host, int(port)


def _credentials(
    data: Any, request: InitRequest, ask: Ask | None, env_refs: list[str], notes: list[str]
) -> None:
    mqtt = data["mqtt"]
    username = request.username
    if username is None and ask is not None:
        username = ask("MQTT username (empty: none)", str(mqtt.get("username") or ""))
    if username:
        mqtt["username"] = username
    elif username == "" and "username" in mqtt:
        del mqtt["username"]
    if not mqtt.get("username") or mqtt.get("password_file") is not None:
        return
    password = mqtt.get("password")
    if isinstance(password, str) and "${" in password and request.password_env is None:
        env_refs.append(password.split("${", 1)[1].split("}")[0].split(":-")[0])
        return
    env = request.password_env
    if env is None:
        env = (
            ask("Environment variable holding the MQTT password", DEFAULT_PASSWORD_ENV)
            if ask
            else DEFAULT_PASSWORD_ENV
        )
    if isinstance(password, str) and "${" not in password:
        notes.append(f"mqtt.password: the sample held a literal password; replaced by ${{{env}}}")
    mqtt["password"] = f"${{{env}}}"
    env_refs.append(env)


def _addresses(data: Any, ask: Ask | None, touched: set[str]) -> None:
    if ask is None:
        return
    renamed: dict[str, str] = {}
    for device in data.get("devices") or []:
        connection = device.get("connection") or {}
        if not connection:
            continue
        kind = next(iter(connection))
        options = connection[kind]
        spec = _spec(kind)
        prefix = f"devices.{device.get('id')}.connection.{kind}."
        if (
            spec is None
            or not isinstance(options, dict)
            or any(t.startswith(prefix) for t in touched)
        ):
            continue
        current = spec.get_address(kind, options)
        default = renamed.get(current, current)
        what = spec.address_label(kind)
        label = f"{device.get('id')} ({device.get('profile', 'no profile')}, {kind}) {what}"
        answer = ask(label, default)
        renamed[current] = answer
        if answer != current:
            spec.set_address(kind, options, answer)


def _spec(kind: str) -> EditsAddress | None:
    """The driver spec that can edit ``kind``'s address, None for an unknown kind."""
    from drivers.registry import spec_for

    try:
        spec = spec_for(kind)
    except KeyError:
        return None
    return spec if isinstance(spec, EditsAddress) else None


def _paths(data: Any, request: InitRequest, touched: set[str], notes: list[str]) -> None:
    """Keep file references pointing at the same files; leave state to the new box."""
    sample_dir = request.sample.resolve().parent
    out_dir = request.output.resolve().parent
    for keys in STATE_KEYS:
        parent = _get(data, keys[:-1])
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        if (
            value is not None
            and not Path(str(value)).is_absolute()
            and ".".join(keys) not in touched
        ):
            del parent[keys[-1]]
            notes.append(
                f"{'.'.join(keys)}: the sample's relative path {value} was left out; the agent "
                "uses its default state directory (/var/lib/edge-agent under systemd)"
            )
    for keys in FILE_KEYS:
        parent = _get(data, keys[:-1])
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        if isinstance(value, str) and "${" not in value and not Path(value).is_absolute():
            parent[keys[-1]] = os.path.relpath(sample_dir / value, out_dir)
    folders = data.get("profiles") or []
    for index, folder in enumerate(folders):
        if not Path(str(folder)).is_absolute():
            folders[index] = os.path.relpath(sample_dir / str(folder), out_dir)
    local = sample_dir / "profiles"
    if local.is_dir() and out_dir != sample_dir:
        data.setdefault("profiles", []).append(os.path.relpath(local, out_dir))
        notes.append(f"profiles: the sample's own profile folder {local} is searched too")


def _get(data: Any, keys: tuple[str, ...]) -> Any:
    node = data
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def init(
    sample: Annotated[Path, typer.Option("--from", help="The sample site file to copy.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The new site file.")],
    site: Annotated[str | None, typer.Option("--site", help="Agent id of the new box.")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="PATH=VALUE, e.g. devices.press-1.host=10.0.0.5 (repeatable)."),
    ] = None,
    broker: Annotated[str | None, typer.Option(help="MQTT broker HOST:PORT.")] = None,
    username: Annotated[str | None, typer.Option(help="MQTT username.")] = None,
    password_env: Annotated[
        str | None, typer.Option(help="Environment variable that will hold the MQTT password.")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Ask nothing: keep the sample's values.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Copy a sample site to a new factory: asks only what differs, then validates the copy.

    Asked (unless given by flags or --yes): agent id, broker, MQTT username and the
    environment variable for its password, each device's address. Comments survive.
    """
    from agent.cli.initsite import InitRequest, copy_site
    from agent.errors import InitError

    def ask(question: str, default: str) -> str:
        try:
            return str(typer.prompt(question, default=default, show_default=bool(default)))
        except typer.Abort:  # end of input: a script, a pipe, stdin not a terminal
            typer.echo()  # end the prompt line
            raise InitError(NO_ANSWER.format(question=question)) from None

    request = InitRequest(sample, output, site, sets or [], broker, username, password_env, force)
    try:
        result = copy_site(request, None if yes else ask)
    except InitError as exc:
        typer.echo(f"edge-agent: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    typer.echo(f"wrote {result.output} (from {sample})")
    for note in result.notes:
        typer.echo(f"note: {note}")
    _validate_copy(result.output, result.env_refs)


def _validate_copy(output: Path, env_refs: list[str]) -> None:
    import os

    from agent.site.loader import load_site
    from agent.site.source import ConfigFileError

    # Secrets are set on the box, not here: stand in for the ones the new file references.
    missing = [name for name in env_refs if name not in os.environ]
    env = {**os.environ, **dict.fromkeys(missing, "(set on the box)")}
    try:
        site = load_site(output, env=env)
    except ConfigFileError as exc:
        for line in str(exc).splitlines():
            typer.echo(line, err=True)
        typer.echo(
            f"{output}: {len(exc.problems)} problems: edit the file, then validate", err=True
        )
        raise typer.Exit(EXIT_INPUT) from None
    print_summary(output, site)
    for name in missing:
        typer.echo(f"note: set {name} in the agent's environment on the box (e.g. systemd)")
