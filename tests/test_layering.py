"""The dependency direction, checked by walking every import with ast.

Inside ``agent/`` (a package may import those to its right, never to its left)::

    cli -> runtime -> {site, buffer, north, compute, status} -> agent's own modules
                                                                (errors, message, clock,
                                                                paths, logs, secretmask),
                                                                drivers.base

- The five middle packages do not import each other; nothing outside ``cli/``
  imports ``cli/``; there is no cycle between packages.
- ``status/`` uses the standard library only (it serves ``status`` on a box
  where nothing else answers); ``paho`` lives in ``agent/north/link.py`` and
  ``agent/north/listen.py`` only, ``sqlite3`` in ``agent/buffer/`` only,
  ``simulators`` in ``agent/cli/demo.py`` only.
- ``drivers/<x>`` import the standard library, third-party libraries and
  ``drivers.base``; never ``agent``, never each other. ``agent`` reaches drivers
  through ``drivers.registry`` and ``drivers.base`` only.
- ``simulators/`` never import ``drivers`` or ``agent``: they encode with their own code.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RANK = {"cli": 3, "runtime": 2, "site": 1, "buffer": 1, "north": 1, "compute": 1, "status": 1}
"""Layer of each package of ``agent/``; the agent's own top-level modules are layer 0."""
ENTRY = {"__main__"}
"""Top-level modules that may import ``agent.cli`` (``python -m agent``)."""
THIRD_PARTY_HOMES: dict[str, tuple[str, ...]] = {
    # The publisher's link, and the subscriber of `edge-agent listen`: a blocking
    # command-line client that sharing the loop-driven link would bend out of shape.
    "paho": ("agent/north/link.py", "agent/north/listen.py"),
    "sqlite3": ("agent/buffer/",),
    "simulators": ("agent/cli/demo.py",),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return _names(tree, _module_of(path))


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _names(tree: ast.AST, module: str) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")[: -node.level]
                base = ".".join([*package, base] if base else package)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def _package(module: str) -> str | None:
    """``agent.site.loader`` -> ``site``; a top-level module of agent -> None."""
    parts = module.split(".")
    if parts[0] != "agent" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def wrong_way(module: str, names: list[str]) -> list[str]:
    """Every import of ``module`` that goes against the direction, as a sentence."""
    own = _package(module)
    own_rank = RANK[own] if own else 0
    leaf = module.rsplit(".", maxsplit=1)[-1]
    problems = []
    for name in names:
        if _top(name) != "agent" or name == "agent":
            continue
        target = _package(name)
        if target is None or target == own:
            continue
        if own is None and leaf in ENTRY and target == "cli":
            continue
        if RANK[target] >= own_rank:
            problems.append(f"{module} imports {name}: {own or 'agent'} may not use {target}")
    return problems


AGENT_FILES = _files("agent")


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_agent_packages_import_only_downward(path: Path) -> None:
    assert wrong_way(_module_of(path), _imports(path)) == []


def test_a_wrong_way_import_is_caught() -> None:
    """The checker itself: imports against the direction are reported, the right ones not."""
    cases = {
        ("agent.site.loader", "from agent.runtime.agent import Agent"): 1,
        ("agent.buffer.store", "import agent.cli.common"): 1,
        ("agent.north.publisher", "from agent.buffer import Buffer"): 1,
        ("agent.message", "from agent.site.models import SiteFile"): 1,
        ("agent.runtime.agent", "from agent.cli import common"): 1,
        ("agent.buffer.store", "from .records import StoreConfig"): 0,
        ("agent.runtime.agent", "from agent.buffer import Buffer"): 0,
        ("agent.cli.app", "from agent.runtime.process import run_agent"): 0,
        ("agent.__main__", "from agent.cli.main import main"): 0,
        ("agent.site.loader", "from agent.paths import SHIPPED_PROFILES"): 0,
    }
    for (module, line), expected in cases.items():
        found = wrong_way(module, _names(ast.parse(line), module))
        assert bool(found) == bool(expected), (module, line, found)


def test_no_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for path in AGENT_FILES:
        if path.stem in ENTRY:  # python -m agent -> cli is the entry, not a layer
            continue
        own = _package(_module_of(path)) or "agent"
        for name in _imports(path):
            if _top(name) == "agent" and name != "agent":
                target = _package(name) or "agent"
                if target != own:
                    edges.setdefault(own, set()).add(target)
    seen: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> None:
        assert node not in stack, f"import cycle: {' -> '.join([*stack, node])}"
        if node in seen:
            return
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for node in sorted(edges):
        visit(node)
    assert {"cli", "runtime"} <= seen  # the walk saw the packages at all


STDLIB = set(sys.stdlib_module_names)


@pytest.mark.parametrize("path", _files("agent/status"), ids=lambda p: p.name)
def test_status_uses_the_standard_library_only(path: Path) -> None:
    for name in _imports(path):
        top = _top(name)
        assert (
            top in STDLIB
            or top == "__future__"
            or name.startswith(("agent.status", "agent.errors"))
        ), f"{path.name}: imports {name}"


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


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_agent_reaches_drivers_through_registry_and_base(path: Path) -> None:
    for name in _imports(path):
        if name.startswith("drivers."):
            assert name.split(".")[1] in ("base", "registry"), f"{path}: imports {name}"


def _at_home(user: str, home: str) -> bool:
    return user == home or (home.endswith("/") and user.startswith(home))


@pytest.mark.parametrize(("library", "homes"), sorted(THIRD_PARTY_HOMES.items()))
def test_library_lives_in_its_homes(library: str, homes: tuple[str, ...]) -> None:
    """Each home is one module, or a package when it ends with a slash; each is used."""
    users = [
        p.relative_to(ROOT).as_posix()
        for p in AGENT_FILES
        if any(_top(n) == library for n in _imports(p))
    ]
    strays = [u for u in users if not any(_at_home(u, h) for h in homes)]
    assert not strays, f"{library} is imported outside {homes}: {strays}"
    unused = [h for h in homes if not any(_at_home(u, h) for u in users)]
    assert not unused, f"nothing in {unused} imports {library} any more: update THIRD_PARTY_HOMES"


def test_protocol_libraries_only_in_driver_modules() -> None:
    homes = {
        "pymodbus": {"drivers/modbus/driver.py"},
        "asyncua": {"drivers/opcua/driver.py"},
        "serial": {"drivers/serial/driver.py", "drivers/dlt645/driver.py"},
    }
    for library, allowed in homes.items():
        users = {
            str(p.relative_to(ROOT))
            for p in _files("drivers") + AGENT_FILES
            if any(_top(n) == library for n in _imports(p))
        }
        assert users <= allowed, f"{library} imported outside {allowed}: {sorted(users - allowed)}"


def test_every_driver_folder_serves_the_kinds_it_declares() -> None:
    """The registry finds drivers by their folder; each declared kind builds its own spec."""
    from drivers import registry

    folders = {p.parent.name for p in (ROOT / "drivers").glob("*/__init__.py")}
    served = {registry.spec_for(kind).__module__.split(".")[1] for kind in registry.kinds()}
    assert served == folders
    assert {"modbus_tcp", "modbus_rtu", "opcua", "serial", "dlt645"} <= set(registry.kinds())
