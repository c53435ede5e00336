"""The site file reference (``docs/SITE-REFERENCE.md``), generated from the models.

Every key of a site file, of each driver's options and of a profile: its
type, default and description, grouped by section. It walks the same
pydantic models :mod:`agent.site.schema` turns into JSON schemas (the drivers
through the same registry), so the page cannot drift from what ``validate``
accepts; ``tests/agent/site/test_reference.py`` keeps the committed page equal
to what this module generates. A dev tool: ``edge-agent schema --markdown``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agent.site.models import ProfileFile, SiteFile, parse_rate
from agent.site.schema import driver_specs
from drivers.base import parse_duration, parse_size

REGENERATE = "edge-agent schema --markdown -o docs/SITE-REFERENCE.md"

_HEADER = f"""\
# Site file reference

<!-- Generated from the models by `{REGENERATE}`; do not edit by hand. -->

Generated from the models that validate site files, driver options and
profiles: every key, its type, its default and what it does. After a change
to a model, regenerate it with one command (from a checkout):

```sh
PYTHONPATH=. python -m agent schema --markdown -o docs/SITE-REFERENCE.md
```

A test fails while this page differs from what the models generate. Keys not
listed are refused (`unknown key`). Durations are written `500ms`, `1s`,
`2m`, `1h` (a bare number is seconds); sizes `64MB`, `256MiB`, `1GB` (a bare
number is bytes); rates `20/s`, `600/min`, `5000/h` (a bare number is per
second).
"""

_RULES = """\
## Rules that span keys

- **A device without a profile**: leave `profile` out and give everything in
  the device entry: `connection`, `protocol` (when a default does not fit),
  `poll_groups` and `tags`. A profile is only a shared starting point:

  ```yaml
  devices:
    - id: pump-3
      connection: {modbus_tcp: {host: 10.0.0.40}}
      protocol: {byte_order: CDAB}
      poll_groups: {fast: 500ms}
      tags:
        flow_m3h: {address: 0x0010, type: float32, group: fast, deadband: 0.1}
        running: {address: 0x0020, type: bool, bit: 0}          # group default: 1s
  ```

- **Poll groups**: every tag belongs to a group (`group`, default `default`).
  Group `default` always exists with an interval of 1s; the profile's
  `poll_groups` add or change groups and the device entry's `poll_groups`
  change them for this site (`poll_groups: {default: 5s, fast: 200ms}`).
  A tag naming a group that neither defines is refused.
- **Report by exception is opt-in**: a tag without `deadband` and without
  `heartbeat` is reported on every poll. With `deadband`, only a move larger
  than it since the last reported value is sent; `heartbeat` sends the
  value at least that often anyway. Errors are always reported.
- **Derived tags (`compute`)**: a profile (or a device entry) may declare
  tags computed from the other tags of the same reading, in order (a derived
  tag may use those declared above it). A formula has tag names, numbers,
  `+ - * / %`, unary `-`, `( )`, comparisons `< <= > >= == !=`,
  `and`/`or`/`not` and the functions `abs(x)`, `min(a, b, ...)`,
  `max(a, b, ...)`, `sqrt(x)`, `round(x)`, `round(x, N)` (half to even),
  `clamp(x, low, high)` and `bit(x, N)` (N a literal 0..63); at most 200
  characters, never run as code. A comparison, logic or `bit` gives a bool
  tag, anything else a float tag (the type the dialects announce); a truth
  counts as 0/1 in arithmetic, a number is true unless 0. Every input comes
  from one poll group. An input in error, missing from the reading, NaN or
  text, a division by zero or the `sqrt` of a negative number make the
  derived tag an error with the reason (`input p_kw: timeout`), never a
  number. `deadband` and `heartbeat` work as on a tag read; a device entry
  changes a profile's derived tag attribute by attribute, and `drop_tags`
  removes one. A name already taken by a tag, an unknown tag, a tag declared
  further down or a formula that does not parse is refused where it is
  written.

  ```yaml
  compute:
    apparent_power_kva: {expr: "sqrt(p_kw * p_kw + q_kvar * q_kvar)", unit: kVA}
    running: {expr: "bit(status_word, 3)"}              # bool
    temp_f: {expr: "temp_c * 9 / 5 + 32", unit: degF, deadband: 0.5}
  ```

- **Modbus unit id**: the device entry's `unit_id` wins over `protocol.unit_id`
  of the same entry, which wins over the profile's `protocol.unit_id`;
  without any of them the unit id is 1. `unit_id` is for Modbus devices
  only (on another device it is an `unknown key`).
- **Overlapping Modbus tags**: a register may be read whole and as bits
  (a `uint16` tag and `bool` tags with `bit` on the same address, all from
  one read); two tags that read whole registers may never share one.
- **Modbus strings**: NUL padding is always dropped; spaces at either end
  of a `string` value too, unless the tag says `strip: false`.
- **"Not available" values**: a Modbus tag's `invalid: [0xFFFF]` (or the
  device's `protocol.invalid` per type) turns those raw values into the tag
  error `not available (0xFFFF)`, never a number.
- **One serial port, one protocol**: devices on one port share its framing
  (baud, parity, stop bits, byte size) and speak one protocol; `validate`
  refuses a Modbus RTU device and a DL/T 645 meter on the same port.
- **A device that stops answering**: its tags are reported once as errors,
  then the agent reconnects after a delay that starts at the device's fastest
  poll interval (at least 0.5s, at most 2s), doubles on each failed attempt
  up to 30s, with +-25 % jitter; the first good poll resets it. Not
  configurable; other devices are not delayed.
- **Destinations (`north`)**: each entry is one broker connection (the keys of
  `mqtt`) speaking one `dialect`, with the block of that dialect only
  (`sparkplug`, `thingsboard`, `alink`, `iotda`; edge-json takes none).
  Without `north` the agent publishes to `mqtt` as always. With `north` and
  an `mqtt` key (even `mqtt: {}`), `mqtt` is one more edge-json destination
  with the id `mqtt`; with `north` and no `mqtt` key, only the `north`
  entries are published to (one of them may then take the id `mqtt`, to keep
  that destination's place in the buffer). `alink` and `iotda` need a
  `subdevices` entry for every enabled device, and sign their own client id,
  user name and password; `topic`, `status_topic` and `events_topic` are edge-json's. A
  Sparkplug destination keeps its bdSeq in `<data_dir>/sparkplug-<id>.bdseq`.
  Secrets: `password`, `access_token`, `device_secret` and `secret` take
  `${ENV}`, or the matching `*_file` key names a file holding it.

  ```yaml
  north:
    - id: county
      dialect: sparkplug-b
      host: scada.county.example
      port: 8883
      tls: {}
      sparkplug: {group_id: county-plants, primary_host: county-scada}
  ```

- **Machines (`analytics`)**: a machine lists `devices`; the `machine:`
  block of each one's profile (in that profile's tag names) gives parts of
  the machine, and the machine's own keys in the site add to or replace
  them, with sources written `device/tag`. Exactly one device may give
  `state` (two: an error naming both) unless the site gives `state`, which
  replaces it; the same for `mode`. A counter role (`total`, `good`,
  `reject`) comes from one device, a site counter replaces that role, and a
  machine has at most two roles (good = total - reject). Alarms are the
  union (a name twice is an error); an alarm's condition may use the state
  inputs and its own `inputs`. The site's `ideal_cycle` overrides the
  profiles'. A machine id follows the device id rules and is not a device
  id. Defaults: `offline_after` is 3 x the poll interval of the state tags
  (the slowest), at least 5s; OEE needs a `calendar`, an `ideal_cycle` and
  a counter (without them summaries carry times and counts only). A uint16
  counter on a fast line needs `max_rate`, or its wraps read as resets.
  Write shift times in quotes: YAML reads an unquoted `10:15` as the
  number 615. `validate` prints one line per machine.

  ```yaml
  analytics:
    timezone: Asia/Shanghai
    calendars:
      two_shift:
        shifts:
          - {name: day, start: "08:00", end: "16:00", breaks: [["10:00", "10:15"]]}
          - {name: night, start: "22:00", end: "06:00"}
    machines:
      press-01:
        devices: [press-01-drive]          # its profile's machine: block gives the state
        calendar: two_shift
        ideal_cycle: 1.2s
        counters: {total: {source: plc-01/parts_made, width: uint32, max_rate: 50/s}}
        energy: {meter: meter-01/import_energy_kwh}
  ```

- **Permissions**: `validate` and `run` warn when the site file, the MQTT
  password file or a key file is readable by every user
  (`... is readable by every user (mode -rw-r--r--): chmod 640 FILE`). Fix it
  with `sudo chown root:edge-agent FILE && sudo chmod 640 FILE`: the service
  user keeps read access, other accounts lose it.
"""


def markdown() -> str:
    """The whole page."""
    parts = [_HEADER, _RULES, "## Site file\n"]
    parts += [section(path, model) for path, model in sections(SiteFile, "")]
    for protocol, model, kinds in driver_specs():
        shown = ", ".join(f"`{k}`" for k in kinds)
        parts.append(
            f"## Driver `{protocol}` (connection {shown})\n\n"
            "The `connection` of a device entry; `protocol` and `tags` of a profile "
            "or of a device entry (a device's tag attributes override the profile's "
            "one by one).\n"
        )
        parts += [section(path, sub, protocol) for path, sub in sections(model, "") if path]
    parts.append(
        "## Profile file\n\n`protocol` and `tags` take the keys of the driver the "
        "profile is for (above); a tag attribute may be `${param.NAME}`.\n"
    )
    parts += [section(path, model) for path, model in sections(ProfileFile, "")]
    return "\n".join(parts)


# --------------------------------------------------------------------------- walking


def sections(model: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    """``(dotted path, model)`` of ``model`` and of every model nested in it, in key order."""
    yield path, model
    for name, info in model.model_fields.items():
        nested, suffix = _nested(info.annotation)
        if nested is not None:
            yield from sections(nested, f"{path}.{name}{suffix}".lstrip("."))


def _nested(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The model a field holds, and how its path is written (``[]``, ``.NAME``)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if _is_model(annotation):
        return annotation, ""
    if origin in (types.UnionType, typing.Union) and len(args) == 1:
        return _nested(args[0])
    if origin is list and args and _is_model(args[0]):
        return args[0], "[]"
    if origin is dict and len(args) == 2 and _is_model(args[1]):
        return args[1], ".NAME"
    return None, ""


def _is_model(value: Any) -> bool:
    return inspect.isclass(value) and issubclass(value, BaseModel)


def section(path: str, model: type[BaseModel], driver: str = "") -> str:
    title = f"### `{path}`" if path else "### Top level"
    title += f" ({driver})" if driver else ""
    doc = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    doc = doc.replace("``", "`")
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        key = info.alias or name  # the key as written (an alias where a name is taken)
        cells = (f"`{key}`", _type(info), _default(info), _cell(info.description or ""))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([title, "", _cell(doc), "", *rows, ""])


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


# --------------------------------------------------------------------------- types


def _type(info: FieldInfo) -> str:
    text = _type_name(info.annotation, list(info.metadata))
    bounds = _bounds(info.metadata)
    return f"{text} ({bounds})" if bounds else text


def _type_name(annotation: Any, metadata: list[Any]) -> str:
    """A type as a contractor reads it: ``duration``, ``one of `a`, `b` ``, ``integer``..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0], [*metadata, *args[1:]])
    unit = _unit(metadata)
    if unit is not None:
        return unit
    if origin in (types.UnionType, typing.Union):
        names = [_type_name(a, metadata) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(names))
    return _container(origin, args) or _SIMPLE.get(annotation) or _model_name(annotation)


def _unit(metadata: list[Any]) -> str | None:
    """``duration``, ``size`` or ``rate`` for the types written with a unit (``500ms``, ``64MB``,
    ``20/s``)."""
    funcs = {getattr(meta, "func", None) for meta in metadata}
    if parse_duration in funcs:
        return "duration"
    if parse_rate in funcs:
        return "rate"
    return "size" if parse_size in funcs else None


def _container(origin: Any, args: tuple[Any, ...]) -> str | None:
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_plural(_type_name(args[0], []))}"
    if origin is dict:
        return f"mapping of name to {_type_name(args[1], [])}"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return "[" + ", ".join(_type_name(a, []) for a in args) + "]"
    return None


_SIMPLE: dict[Any, str] = {
    bool: "true/false",
    int: "integer",
    float: "number",
    str: "text",
    Path: "path",
    SecretStr: "text (secret)",
    Any: "any",
}


def _model_name(annotation: Any) -> str:
    return "section" if _is_model(annotation) else str(annotation)


def _plural(name: str) -> str:
    return "sections" if name == "section" else f"{name}s" if name in ("path", "text") else name


_BOUNDS: tuple[tuple[type, str, str], ...] = (
    (Ge, "ge", ">="),
    (Gt, "gt", ">"),
    (Le, "le", "<="),
    (Lt, "lt", "<"),
    (MinLen, "min_length", "length >="),
    (MaxLen, "max_length", "length <="),
)


def _bounds(metadata: list[Any]) -> str:
    """``>= 1, <= 65535``: the limits pydantic checks, as written on the field."""
    out = []
    for meta in metadata:
        for kind, attr, word in _BOUNDS:
            if isinstance(meta, kind):
                value = getattr(meta, attr)
                out.append(f"{word} {value:g}" if isinstance(value, float) else f"{word} {value}")
    return ", ".join(out)


# --------------------------------------------------------------------------- defaults


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    factory = info.default_factory
    value = info.default if factory is None else factory()  # type: ignore[call-arg]
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, dict | list) and not value:
        return "none"
    kind = _type_name(info.annotation, list(info.metadata))
    return f"`{_value(value, kind)}`"


def _value(value: Any, kind: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "duration" and isinstance(value, int | float):
        return _duration(float(value))
    if kind == "size" and isinstance(value, int):
        return _size(value)
    if value == "":
        return '""'
    return repr(value) if isinstance(value, str) and value.strip() != value else str(value)


def _duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, factor in (("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{seconds / factor:g}{unit}"
    return f"{seconds:g}s"


def _size(size: int) -> str:
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}"
