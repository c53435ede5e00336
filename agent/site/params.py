"""Profile parameters: ``${param.NAME}`` references and small arithmetic, never ``eval``.

A profile declares parameters with defaults (``params: {rated_current_a: 10}``)
and uses them in tag or protocol attributes; a site sets them per device
(``params: {rated_current_a: 32}``). The grammar is deliberately tiny:

* ``${param.NAME}`` as the whole value keeps the parameter's type
  (``scale: ${param.current_scale}`` stays a number);
* ``${EXPR}`` where EXPR is numbers, ``param.NAME``, ``+ - * /``, unary minus
  and parentheses (``deadband: ${param.rated_current_a * 0.01}``);
* inside a longer string the value is written as text
  (``description: "rated ${param.rated_current_a} A"``).

Expressions are parsed with :mod:`ast` and walked over an allow-list of node
types; anything else (names, calls, attributes other than ``param.X``) is an
error, so a profile can never run code.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

Scalar = bool | int | float | str

_REF: Final = re.compile(r"\$\{([^{}]*)\}")
_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]*$")
_BINARY: Final[dict[type[ast.operator], Callable[[float, float], float]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
MAX_EXPRESSION = 200


class ParamError(ValueError):
    """A parameter reference or expression is wrong; the message says how."""


def check_name(name: str) -> str:
    """Parameter names are lower-case identifiers (``rated_current_a``)."""
    if not _NAME.match(name):
        raise ValueError(f"parameter name {name!r}: use lower-case letters, digits and '_'")
    return name


def has_reference(value: Any) -> bool:
    """True when ``value`` is a string holding ``${...}``."""
    return isinstance(value, str) and _REF.search(value) is not None


def references(value: Any) -> set[str]:
    """Parameter names used by ``value`` (empty for non-strings)."""
    if not isinstance(value, str):
        return set()
    return {m.group(1) for m in re.finditer(r"param\.([A-Za-z_][A-Za-z0-9_]*)", value)}


def substitute(value: Any, params: Mapping[str, Scalar]) -> Any:
    """``value`` with every ``${...}`` replaced; non-strings come back unchanged."""
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _REF.fullmatch(value.strip())
    if whole is not None:
        return evaluate(whole.group(1), params)
    return _REF.sub(lambda m: _text(evaluate(m.group(1), params)), value)


def evaluate(expression: str, params: Mapping[str, Scalar]) -> Scalar:
    """Value of one expression (the text between ``${`` and ``}``)."""
    text = expression.strip()
    if len(text) > MAX_EXPRESSION:
        raise ParamError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ParamError(
            f"cannot parse ${{{text}}}: use param.NAME, numbers, + - * / ( )"
        ) from None
    result = _walk(tree.body, params, text)
    if isinstance(result, float) and not math.isfinite(result):
        raise ParamError(f"${{{text}}} is not a finite number")
    return result


def _walk(node: ast.AST, params: Mapping[str, Scalar], text: str) -> Scalar:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id != "param":
            raise ParamError(f"${{{text}}}: only param.NAME may be referenced")
        if node.attr not in params:
            known = ", ".join(sorted(params)) or "none"
            raise ParamError(f"unknown parameter {node.attr!r} (the profile declares: {known})")
        return params[node.attr]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _number(_walk(node.operand, params, text), text)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _number(_walk(node.left, params, text), text)
        right = _number(_walk(node.right, params, text), text)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ParamError(f"${{{text}}}: division by zero")
        return _BINARY[type(node.op)](left, right)
    raise ParamError(f"${{{text}}}: only param.NAME, numbers, + - * / and ( ) are allowed")


def _number(value: Scalar, text: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError(f"${{{text}}}: arithmetic needs numbers, got {value!r}")
    return value


def _text(value: Scalar) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_override(name: str, default: Scalar, value: Any) -> Scalar:
    """A site's value for parameter ``name``, of the same kind as the profile's default."""
    kinds: tuple[type, ...]
    if isinstance(default, bool):
        kinds, label = (bool,), "true or false"
    elif isinstance(default, int | float):
        kinds, label = (int, float), "a number"
    else:
        kinds, label = (str,), "a string"
    if isinstance(value, bool) and not isinstance(default, bool):
        raise ParamError(f"parameter {name!r} must be {label} (its default is {default!r})")
    if not isinstance(value, kinds):
        raise ParamError(f"parameter {name!r} must be {label} (its default is {default!r})")
    return value
