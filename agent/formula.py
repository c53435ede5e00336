"""The formula language of derived tags (``compute:``), compiled once, never ``eval``.

A profile or a site declares a derived tag as a formula over other tags of the
same device (``sqrt(p_kw * p_kw + q_kvar * q_kvar)``). The text is parsed with
:mod:`ast` and walked over an allow-list; each node becomes a small closure,
so a reading is evaluated without walking a tree again. What may be written:

==========================  ==================================================
tag names                   the device's tags, and derived tags declared above
numbers                     ``3``, ``0.5``, ``1e3`` (no text, no ``True``)
arithmetic                  ``+ - * / %``, unary ``-`` and ``+``, ``( )``
comparisons                 ``< <= > >= == !=`` (chains like ``0 < x < 10``)
logic                       ``and``, ``or``, ``not`` (short-circuit)
functions                   ``abs(x)``, ``min(a, b, ...)``, ``max(a, b, ...)``,
                            ``sqrt(x)``, ``round(x)``, ``round(x, N)``,
                            ``clamp(x, low, high)``, ``bit(x, N)``
==========================  ==================================================

A formula is at most :data:`MAX_FORMULA` characters. ``N`` of ``bit`` (0-63)
and of ``round`` (0-9) is a literal integer.

Types: comparisons, ``and``/``or``/``not`` and ``bit`` give a truth, and a
formula whose outermost operation is one of them is a **bool** tag; every other
formula is a **float** tag (``round`` too). Where a number is needed a truth
counts as 0 or 1; where a truth is needed a number is true unless it is 0. A
tag holding text is an error wherever it is used. ``round`` rounds half to
even (``round(2.5)`` is 2), as Python does; ``%`` takes the sign of the divisor.

Evaluating never invents a number: division by zero, ``sqrt`` of a negative
number, ``bit`` of a number that is not whole, text where a number is needed,
a result that is not finite: each raises :class:`EvalError` with a short
reason. The caller (:mod:`agent.compute.derive`) checks the inputs first.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from drivers.base import Value

MAX_FORMULA: Final = 200
FUNCTIONS: Final = ("abs", "min", "max", "sqrt", "round", "clamp", "bit")

Kind = Literal["float", "bool"]
Env = Mapping[str, Value]
Number = int | float
_Fn = Callable[[Env], Value]

_ARITH: Final[dict[type[ast.operator], tuple[str, Callable[[Number, Number], Number]]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.Mod: ("%", operator.mod),
}
_COMPARE: Final[dict[type[ast.cmpop], Callable[[Number, Number], bool]]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_REFUSED_OPS: Final[dict[type[ast.AST], str]] = {
    ast.Pow: "'**' (write x * x)",
    ast.FloorDiv: "'//'",
    ast.BitAnd: "'&' (use bit(x, N))",
    ast.BitOr: "'|'",
    ast.BitXor: "'^'",
    ast.LShift: "'<<'",
    ast.RShift: "'>>' (use bit(x, N))",
    ast.MatMult: "'@'",
    ast.Invert: "'~'",
    ast.Is: "'is' (use ==)",
    ast.IsNot: "'is not' (use !=)",
    ast.In: "'in'",
    ast.NotIn: "'not in'",
}


class FormulaError(ValueError):
    """A formula cannot be compiled; ``column`` (1-based) says where, ``name`` which tag."""

    def __init__(self, message: str, column: int | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column
        self.name = name

    def __str__(self) -> str:
        return self.message if self.column is None else f"{self.message} (column {self.column})"


class UnknownName(FormulaError):
    """The formula names a tag that is not among those it may use."""


class EvalError(ArithmeticError):
    """A value cannot be computed from these inputs; the message is the short reason."""


@dataclass(frozen=True, slots=True)
class Formula:
    """A compiled formula: its text, the tags it reads (first use first), its result kind."""

    text: str
    inputs: tuple[str, ...]
    kind: Kind
    evaluate: Callable[[Env], Value] = field(compare=False, repr=False)
    """The value for ``env`` (every input present, finite, not in error); raises
    :class:`EvalError`. A float formula gives a float, a bool formula a bool."""


def compile_formula(text: str, names: Collection[str]) -> Formula:
    """Compile ``text``, which may use the tags in ``names``; raise :class:`FormulaError`."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("an empty formula: write an expression over the device's tags")
    if len(text) > MAX_FORMULA:
        raise FormulaError(f"a formula is at most {MAX_FORMULA} characters (this has {len(text)})")
    lead = len(text) - len(text.lstrip())
    # newlines of a folded YAML string are spaces here; columns stay those of the text
    body = text.strip().replace("\n", " ").replace("\r", " ").replace("\t", " ")
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        column = None if exc.offset is None else min(max(exc.offset, 1), len(body)) + lead
        raise FormulaError(f"cannot parse the formula: {exc.msg}", column) from None
    except (ValueError, RecursionError):
        raise FormulaError("cannot parse the formula") from None
    compiler = _Compiler(names, lead, body)
    top = tree.body
    if _gives_truth(top):
        return _formula(text, compiler, "bool", compiler.truth(top))
    return _formula(text, compiler, "float", _finite(compiler.num(top)))


def _formula(text: str, compiler: _Compiler, kind: Kind, fn: Callable[[Env], Value]) -> Formula:
    if not compiler.inputs:
        raise FormulaError("the formula uses no tag: a constant is not a derived value")
    return Formula(text, tuple(compiler.inputs), kind, fn)


def _gives_truth(node: ast.expr) -> bool:
    if isinstance(node, ast.Compare | ast.BoolOp):
        return True
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.Not)
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "bit"


def _finite(fn: Callable[[Env], Number]) -> Callable[[Env], Value]:
    def number(env: Env) -> Value:
        try:
            value = float(fn(env))
        except OverflowError:
            raise EvalError("result too large") from None
        if not math.isfinite(value):
            raise EvalError("result is not finite")
        return value

    return number


# what a compiled node gives: a number, or a truth (tag names are typed where used)
_Kind = Literal["num", "bool"]


class _Compiler:
    def __init__(self, names: Collection[str], lead: int, body: str) -> None:
        self.names = names
        self.lead = lead
        self.body = body
        self.inputs: list[str] = []

    def column(self, node: ast.AST) -> int:
        return int(getattr(node, "col_offset", 0)) + 1 + self.lead

    def refuse(self, node: ast.AST, what: str) -> FormulaError:
        thing, _, hint = what.partition(" (")
        return FormulaError(
            f"{thing} is not allowed{' (' + hint if hint else ''}: a formula has tag names, "
            f"numbers, + - * / %, comparisons, and/or/not and {', '.join(FUNCTIONS)}",
            self.column(node),
        )

    def node(self, node: ast.expr) -> tuple[_Fn, _Kind]:
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.refuse(node, f"the constant {value!r}")
            return (lambda env: value), "num"
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node), "num"
        if isinstance(node, ast.BoolOp):
            return self.boolean(node), "bool"
        if isinstance(node, ast.Compare):
            return self.compare(node), "bool"
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.refuse(node, _describe(node))

    def name(self, node: ast.Name) -> None:
        name = node.id
        if name not in self.names:
            if name in FUNCTIONS:
                raise FormulaError(f"{name} is a function: write {name}(...)", self.column(node))
            raise UnknownName(f"unknown tag {name!r}", self.column(node), name)
        if name not in self.inputs:
            self.inputs.append(name)

    def num(self, node: ast.expr) -> Callable[[Env], Number]:
        if isinstance(node, ast.Name):
            self.name(node)
            name = node.id
            return lambda env: _number(env[name], name)
        fn, kind = self.node(node)
        if kind == "num":
            return fn  # type: ignore[return-value]  # numeric nodes return numbers
        return lambda env: int(fn(env))  # a truth counts as 0 or 1

    def truth(self, node: ast.expr) -> Callable[[Env], bool]:
        if isinstance(node, ast.Name):
            self.name(node)
            name = node.id
            return lambda env: _truth(env[name], name)
        fn, kind = self.node(node)
        if kind == "bool":
            return fn  # type: ignore[return-value]  # truth nodes return bools
        return lambda env: fn(env) != 0

    def unary(self, node: ast.UnaryOp) -> tuple[_Fn, _Kind]:
        if isinstance(node.op, ast.Not):
            inner = self.truth(node.operand)
            return (lambda env: not inner(env)), "bool"
        if isinstance(node.op, ast.USub):
            value = self.num(node.operand)
            return (lambda env: -value(env)), "num"
        if isinstance(node.op, ast.UAdd):
            return self.num(node.operand), "num"
        raise self.refuse(node, _REFUSED_OPS.get(type(node.op), "this operator"))

    def binary(self, node: ast.BinOp) -> _Fn:
        entry = _ARITH.get(type(node.op))
        if entry is None:
            error = self.refuse(node, _REFUSED_OPS.get(type(node.op), "this operator"))
            # point at the operator, not at the start of its left operand
            after = self.body[node.left.end_col_offset or 0 :]
            error.column = (node.left.end_col_offset or 0) + 1 + self.lead
            error.column += len(after) - len(after.lstrip(" ()"))
            raise error
        symbol, op = entry
        left, right = self.num(node.left), self.num(node.right)
        if symbol in "/%":

            def divide(env: Env) -> Number:
                a, b = left(env), right(env)
                if b == 0:
                    raise EvalError("division by zero" if symbol == "/" else "modulo by zero")
                return op(a, b)

            return divide

        def arith(env: Env) -> Number:
            return op(left(env), right(env))

        return arith

    def boolean(self, node: ast.BoolOp) -> _Fn:
        parts = [self.truth(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda env: all(p(env) for p in parts)
        return lambda env: any(p(env) for p in parts)

    def compare(self, node: ast.Compare) -> _Fn:
        ops = []
        for op in node.ops:
            fn = _COMPARE.get(type(op))
            if fn is None:
                raise self.refuse(node, _REFUSED_OPS.get(type(op), "this comparison"))
            ops.append(fn)
        terms = [self.num(node.left), *(self.num(c) for c in node.comparators)]
        if len(ops) == 1:
            first, left, right = ops[0], terms[0], terms[1]
            return lambda env: first(left(env), right(env))

        def chain(env: Env) -> bool:
            a = terms[0](env)
            for test, term in zip(ops, terms[1:], strict=True):
                b = term(env)
                if not test(a, b):
                    return False
                a = b
            return True

        return chain

    def call(self, node: ast.Call) -> tuple[_Fn, _Kind]:
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in FUNCTIONS:
            what = f"the function {func.id!r}" if isinstance(func, ast.Name) else "this call"
            raise self.refuse(node, what)
        name = func.id
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise FormulaError(f"{name}(): give its arguments by position", self.column(node))
        args = node.args
        arity = {"abs": (1, 1), "sqrt": (1, 1), "round": (1, 2), "clamp": (3, 3), "bit": (2, 2)}
        low, high = arity.get(name, (2, 99))
        if not low <= len(args) <= high:
            wanted = {
                "abs": "abs(x)",
                "sqrt": "sqrt(x)",
                "round": "round(x) or round(x, N)",
                "clamp": "clamp(x, low, high)",
                "bit": "bit(x, N)",
            }.get(name, f"{name}(a, b, ...) with at least two arguments")
            raise FormulaError(f"{name}() takes {wanted}", self.column(node))
        if name == "bit":
            return self.bit(node), "bool"
        if name == "round":
            return self.round(node), "num"
        nums = [self.num(a) for a in args]
        return _NUMERIC[name](nums), "num"

    def literal(self, node: ast.expr, what: str, low: int, high: int) -> int:
        value = node.value if isinstance(node, ast.Constant) else None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise FormulaError(f"{what} must be a whole number {low}..{high}", self.column(node))
        return value

    def bit(self, node: ast.Call) -> _Fn:
        x = self.num(node.args[0])
        n = self.literal(node.args[1], "the bit number of bit(x, N)", 0, 63)

        def bit(env: Env) -> bool:
            value = x(env)
            if isinstance(value, float):
                if not value.is_integer():
                    raise EvalError(f"bit() of {value:g}, which is not a whole number")
                value = int(value)
            return bool((value >> n) & 1)

        return bit

    def round(self, node: ast.Call) -> _Fn:
        x = self.num(node.args[0])
        if len(node.args) == 1:
            return lambda env: float(round(x(env)))
        digits = self.literal(node.args[1], "the digits of round(x, N)", 0, 9)
        return lambda env: round(float(x(env)), digits)


_Num = Callable[[Env], Number]


def _abs(args: list[_Num]) -> _Fn:
    x = args[0]
    return lambda env: abs(x(env))


def _min(args: list[_Num]) -> _Fn:
    return lambda env: min(a(env) for a in args)


def _max(args: list[_Num]) -> _Fn:
    return lambda env: max(a(env) for a in args)


def _sqrt(args: list[_Num]) -> _Fn:
    x = args[0]

    def sqrt(env: Env) -> Number:
        value = x(env)
        if value < 0:
            raise EvalError("sqrt of a negative number")
        return math.sqrt(value)

    return sqrt


def _clamp(args: list[_Num]) -> _Fn:
    x, low, high = args

    def clamp(env: Env) -> Number:
        lo, hi = low(env), high(env)
        if lo > hi:
            raise EvalError("clamp() with its low bound above its high bound")
        return min(max(x(env), lo), hi)

    return clamp


_NUMERIC: Final[dict[str, Callable[[list[_Num]], _Fn]]] = {
    "abs": _abs,
    "min": _min,
    "max": _max,
    "sqrt": _sqrt,
    "clamp": _clamp,
}


def _number(value: Value, name: str) -> Number:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    raise EvalError(f"input {name}: text, not a number")


def _truth(value: Value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    raise EvalError(f"input {name}: text, not a number")


def _describe(node: ast.AST) -> str:
    kinds = {
        ast.Attribute: "an attribute ('.')",
        ast.Subscript: "indexing ('[ ]')",
        ast.IfExp: "'x if c else y'",
        ast.Lambda: "lambda",
        ast.Tuple: "a tuple (',')",
        ast.List: "a list",
        ast.Dict: "a dict",
        ast.Set: "a set",
        ast.JoinedStr: "an f-string",
        ast.NamedExpr: "':='",
        ast.ListComp: "a comprehension",
        ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a comprehension",
        ast.Starred: "'*'",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.YieldFrom: "yield",
    }
    return kinds.get(type(node), f"'{type(node).__name__}'")
