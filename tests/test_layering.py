"""The dependency direction of DESIGN.md, checked by walking every import with ast.

- drivers/* import the standard library, third-party libraries and drivers.base
  (plus drivers.registry for the package itself); never agent, never each other.
- simulators/ never import drivers or agent: they encode with their own code.
- agent/ reaches drivers only through drivers.registry and drivers.base.
- paho lives in agent/publisher.py only; sqlite3 in the agent/buffer/ package only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.append("." * node.level + (node.module or ""))
    return names


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


@pytest.mark.parametrize("path", _files("drivers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_drivers_import_only_base_and_their_own_package(path: Path) -> None:
    rel = path.relative_to(ROOT / "drivers")
    own = rel.parts[0] if len(rel.parts) > 1 else None
    for name in _imports(path):
        assert _top(name) != "agent", f"{path}: drivers never import agent ({name})"
        assert not name.startswith("simulators"), f"{path}: imports {name}"
        if name.startswith("drivers."):
            sub = name.split(".")[1]
            allowed = {"base", own} if own else {"base", "registry"}
            assert sub in allowed, f"{path}: drivers never import each other ({name})"


@pytest.mark.parametrize("path", _files("simulators"), ids=lambda p: str(p.relative_to(ROOT)))
def test_simulators_never_import_agent_or_drivers(path: Path) -> None:
    for name in _imports(path):
        assert _top(name) not in ("agent", "drivers"), f"{path}: imports {name}"


@pytest.mark.parametrize("path", _files("agent"), ids=lambda p: str(p.relative_to(ROOT)))
def test_agent_reaches_drivers_through_registry_and_base(path: Path) -> None:
    for name in _imports(path):
        if name.startswith("drivers."):
            assert name.split(".")[1] in ("base", "registry"), f"{path}: imports {name}"
        assert _top(name) != "simulators" or path.name in ("demo.py", "cli.py", "simulate.py"), (
            f"{path}: only the demo and simulate commands start simulators ({name})"
        )


@pytest.mark.parametrize(
    ("library", "home"),
    [("paho", "agent/publisher.py"), ("sqlite3", "agent/buffer/")],
)
def test_library_lives_in_one_module(library: str, home: str) -> None:
    """``home`` is one module, or a package when it ends with a slash."""
    users = [
        p.relative_to(ROOT).as_posix()
        for p in _files("agent")
        if any(_top(n) == library for n in _imports(p))
    ]
    strays = [u for u in users if u != home and not (home.endswith("/") and u.startswith(home))]
    assert not strays, f"{library} is imported outside {home}: {strays}"


def test_protocol_libraries_only_in_driver_modules() -> None:
    homes = {
        "pymodbus": "drivers/modbus/driver.py",
        "asyncua": "drivers/opcua/driver.py",
        "serial": "drivers/serial/driver.py",
    }
    for library, home in homes.items():
        users = {
            str(p.relative_to(ROOT))
            for p in _files("drivers") + _files("agent")
            if any(_top(n) == library for n in _imports(p))
        }
        assert users <= {home}, f"{library} imported outside {home}: {sorted(users - {home})}"
