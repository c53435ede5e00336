"""YAML with line numbers: every value knows the ``file:line`` it came from.

Config errors must name the place (``site.yaml:42: devices[2].tags.x.address:
...``), so loading keeps a map from key path to source line next to the plain
data. Duplicate keys, which plain YAML loaders silently resolve to the last one,
are errors here. ``${VAR}`` and ``${VAR:-default}`` in strings are replaced from
the environment, so secrets stay out of the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.errors import SiteError

Path_ = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CLoader: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
"""What the pure-Python reader refuses: such a file takes the slow path and its message."""


@dataclass(frozen=True, slots=True)
class Where:
    """A position in a source file (1-based line)."""

    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Problem:
    """One located configuration problem, printed as ``FILE:LINE: path: message``."""

    where: Where | None
    path: str
    message: str

    def __str__(self) -> str:
        place = f"{self.where}: " if self.where else ""
        return f"{place}{self.path}: {self.message}" if self.path else f"{place}{self.message}"


class ConfigFileError(SiteError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(slots=True)
class Source:
    """Parsed YAML data plus the line of every key path in it."""

    file: Path
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    env_paths: set[Path_] = field(default_factory=set)
    """Paths whose value came from an environment variable (never printed)."""

    def where(self, path: Path_) -> Where:
        """The line of ``path`` or of its closest ancestor present in the file."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(path[:cut])
            if line is not None:
                return Where(self.file, line)
        return Where(self.file, 1)


def load(file: Path, env: Mapping[str, str] | None = None) -> Source:
    """Read and parse ``file``; raise :class:`ConfigFileError` with located problems."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError([Problem(None, "", f"{file}: cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigFileError([Problem(Where(file, 1), "", "is not UTF-8 text")]) from exc
    return loads(text, file, os.environ if env is None else env)


def loads(text: str, file: Path, env: Mapping[str, str]) -> Source:
    """Parse YAML ``text`` as if read from ``file``."""
    fast = _loads_fast(text, file, env)
    if fast is not None:
        return fast
    return _loads(text, file, env, yaml.SafeLoader)


def _loads_fast(text: str, file: Path, env: Mapping[str, str]) -> Source | None:
    """:func:`loads` with libyaml's parser (about 10x quicker), None on any problem.

    A file with a problem is parsed again by the pure-Python loader, so every
    error message and line is the one that loader gives; the two build the
    same data and lines for a valid file (same resolver, same constructor).
    """
    if _CLoader is None or _NON_PRINTABLE.search(text):
        return None
    try:
        return _loads(text, file, env, _CLoader)
    except (ConfigFileError, yaml.YAMLError):
        return None


def _loads(
    text: str, file: Path, env: Mapping[str, str], loader_class: type[yaml.SafeLoader]
) -> Source:
    source = Source(file, None)
    problems: list[Problem] = []
    try:
        # the constructor already scans for characters YAML forbids (ReaderError)
        loader = loader_class(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file) from exc
    try:
        node = loader.get_single_node()
        if node is not None:
            source.data = _build(loader, node, (), source, env, problems)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigFileError(
            [Problem(Where(file, line), "", f"YAML syntax: {exc.problem or exc.context}")]
        ) from exc
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file) from exc
    finally:
        loader.dispose()
    if problems:
        raise ConfigFileError(problems)
    return source


def _reader_error(exc: yaml.reader.ReaderError, text: str, file: Path) -> ConfigFileError:
    """A character YAML does not allow (a control character, say): where and which."""
    line = text.count("\n", 0, max(0, exc.position)) + 1
    char = exc.character
    shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
    return ConfigFileError(
        [Problem(Where(file, line), "", f"character {shown} is not allowed in YAML")]
    )


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path_,
    source: Source,
    env: Mapping[str, str],
    problems: list[Problem],
) -> Any:
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                problems.append(
                    Problem(
                        Where(source.file, key_node.start_mark.line + 1),
                        dotted(path),
                        "keys must be plain scalars",
                    )
                )
                continue
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            if key in out:
                problems.append(
                    Problem(
                        Where(source.file, key_node.start_mark.line + 1),
                        dotted(child),
                        f"duplicate key (first defined on line {source.lines[child]})",
                    )
                )
                continue
            source.lines[child] = key_node.start_mark.line + 1
            out[key] = _build(loader, value_node, child, source, env, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, i), source, env, problems)
            for i, item in enumerate(node.value)
        ]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and "${" in value:
        value = _interpolate(value, path, source, env, problems)
    return value


def _interpolate(
    value: str, path: Path_, source: Source, env: Mapping[str, str], problems: list[Problem]
) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            Problem(source.where(path), dotted(path), f"environment variable {name} is not set")
        )
        return ""

    source.env_paths.add(path)
    return _ENV.sub(replace, value)


def dotted(path: Path_) -> str:
    """``("devices", 2, "tags", "x")`` -> ``devices[2].tags.x``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
