"""Profile files as a simulator needs them: ``extends`` merged, ``${param...}`` filled in.

The simulator reads the same profile files as the agent but with its own code
(it never imports the agent): a base profile named by ``extends`` is merged
under the child (tags attribute by attribute, the child winning; ``drop_tags``
removes inherited tags), and attribute values written as ``${param.NAME}`` or
``${EXPR}`` (numbers, ``param.NAME``, ``+ - * /``, parentheses) are computed
from the profile's parameter defaults and the simulated device's own values.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

_SECTIONS: Final = ("protocol", "poll_groups", "params")
MAX_DEPTH: Final = 8


def read_yaml(path: Path) -> dict[str, Any]:
    """One profile file as a dict (``yaml.safe_load``)."""
    with path.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a profile (not a mapping)")
    return data


def merged(path: Path, depth: int = 0) -> dict[str, Any]:
    """The profile at ``path`` with its ``extends`` chain merged (base from the same folder)."""
    data = read_yaml(path)
    parent = data.get("extends")
    if parent is None:
        return data
    if depth >= MAX_DEPTH:
        raise ValueError(f"{path}: extends goes deeper than {MAX_DEPTH} (a cycle?)")
    base = merged(path.parent / f"{parent}.yaml", depth + 1)
    out = {**base, **{k: v for k, v in data.items() if k not in ("tags", *_SECTIONS)}}
    for section in _SECTIONS:
        out[section] = {**(base.get(section) or {}), **(data.get(section) or {})}
    tags = {name: dict(attrs) for name, attrs in (base.get("tags") or {}).items()}
    for name, attrs in (data.get("tags") or {}).items():
        tags.setdefault(name, {}).update(attrs)
    for name in data.get("drop_tags") or []:
        tags.pop(name, None)
    out["tags"] = tags
    return out


def fill_params(profile: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``profile`` with every ``${...}`` in protocol and tag attributes computed."""
    values = {**(profile.get("params") or {}), **given}
    unknown = set(given) - set(profile.get("params") or {})
    if unknown:
        raise ValueError(f"unknown params {sorted(unknown)} for {profile.get('profile')}")
    out = dict(profile)
    out["protocol"] = {k: _fill(v, values) for k, v in (profile.get("protocol") or {}).items()}
    out["tags"] = {
        name: {k: _fill(v, values) for k, v in attrs.items()}
        for name, attrs in (profile.get("tags") or {}).items()
    }
    return out


def _fill(value: Any, params: Mapping[str, Any]) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("${") and text.endswith("}") and text.count("${") == 1:
        return _compute(ast.parse(text[2:-1].strip(), mode="eval").body, params)
    return value


_OPERATORS: Final[dict[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _compute(node: ast.AST, params: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "param"
    ):
        return params[node.attr]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_compute(node.operand, params)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _compute(node.left, params), _compute(node.right, params)
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError(f"unsupported expression: {ast.dump(node)}")
