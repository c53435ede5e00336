"""The formula language of derived tags: what compiles, what it gives, every refusal."""

from __future__ import annotations

import math

import pytest

from agent.formula import MAX_FORMULA, EvalError, FormulaError, UnknownName, compile_formula
from drivers.base import Value

NAMES = ("p_kw", "q_kvar", "status_word", "temp_c", "mode", "coil", "x", "y")


def value(text: str, **env: Value) -> Value:
    return compile_formula(text, NAMES).evaluate(env)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("sqrt(p_kw * p_kw + q_kvar * q_kvar)", {"p_kw": 3, "q_kvar": 4}, 5.0),
        ("temp_c * 9 / 5 + 32", {"temp_c": 100}, 212.0),
        ("temp_c * 9 / 5 + 32", {"temp_c": -40.0}, -40.0),
        ("-x + +y", {"x": 2, "y": 5}, 3.0),
        ("x % 4", {"x": 10}, 2.0),
        ("x % 4", {"x": -1}, 3.0),  # the sign of the divisor, as Python
        ("(x + y) * 2", {"x": 1, "y": 2}, 6.0),
        ("abs(x)", {"x": -2.5}, 2.5),
        ("min(x, y, 3)", {"x": 7, "y": 4}, 3.0),
        ("max(x, y)", {"x": 7, "y": 4}, 7.0),
        ("round(x)", {"x": 2.5}, 2.0),  # half to even
        ("round(x)", {"x": 3.5}, 4.0),
        ("round(x, 2)", {"x": 1.23456}, 1.23),
        ("clamp(x, 0, 100)", {"x": 140}, 100.0),
        ("clamp(x, 0, 100)", {"x": -3}, 0.0),
        ("clamp(x, 0, 100)", {"x": 42}, 42.0),
        ("x", {"x": 7}, 7.0),  # a bare tag is a float tag
        ("coil + coil", {"coil": True}, 2.0),  # a truth counts as 1
        ("(x > 1) + (y > 1)", {"x": 2, "y": 3}, 2.0),
        ("1e3 * x", {"x": 2}, 2000.0),
    ],
)
def test_numbers(text: str, env: dict[str, Value], expected: float) -> None:
    formula = compile_formula(text, NAMES)
    assert formula.kind == "float"
    got = formula.evaluate(env)
    assert type(got) is float
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("bit(status_word, 3)", {"status_word": 8}, True),
        ("bit(status_word, 3)", {"status_word": 7}, False),
        ("bit(status_word, 0)", {"status_word": 9.0}, True),  # a whole float is fine
        ("bit(status_word, 15)", {"status_word": -1}, True),  # a signed register's sign bit
        ("bit(status_word, 63)", {"status_word": 1 << 63}, True),
        ("x > 1", {"x": 2}, True),
        ("x <= 1", {"x": 2}, False),
        ("x == 2 and y != 2", {"x": 2, "y": 3}, True),
        ("0 < x < 10", {"x": 5}, True),
        ("0 < x < 10", {"x": 10}, False),
        ("0 < x < 10 < y", {"x": 5, "y": 1}, False),
        ("not coil", {"coil": False}, True),
        ("not x", {"x": 0}, True),  # a number is true unless 0
        ("coil or x > 5", {"coil": False, "x": 6}, True),
        ("coil and x", {"coil": True, "x": 0.0}, False),
    ],
)
def test_truths(text: str, env: dict[str, Value], expected: bool) -> None:
    formula = compile_formula(text, NAMES)
    assert formula.kind == "bool"
    assert formula.evaluate(env) is expected


def test_inputs_in_order_of_first_use_each_once() -> None:
    formula = compile_formula("q_kvar / p_kw + q_kvar * sqrt(p_kw) + x", NAMES)
    assert formula.inputs == ("q_kvar", "p_kw", "x")


def test_and_short_circuits_like_a_guard() -> None:
    assert value("x != 0 and 10 / x > 1", x=0, y=0) is False


@pytest.mark.parametrize(
    ("text", "env", "reason"),
    [
        ("p_kw / x", {"p_kw": 1, "x": 0}, "division by zero"),
        ("p_kw / x", {"p_kw": 1, "x": 0.0}, "division by zero"),
        ("p_kw % x", {"p_kw": 1, "x": 0}, "modulo by zero"),
        ("sqrt(x)", {"x": -1}, "sqrt of a negative number"),
        ("mode + 1", {"mode": "auto"}, "input mode: text, not a number"),
        ("not mode", {"mode": "auto"}, "input mode: text, not a number"),
        ("mode", {"mode": "auto"}, "input mode: text, not a number"),
        ("bit(x, 2)", {"x": 2.5}, "bit() of 2.5, which is not a whole number"),
        ("x * 1e308 * 10", {"x": 1.0}, "result is not finite"),
        ("x * 1.0", {"x": 10**400}, "result too large"),
        ("clamp(x, y, 0)", {"x": 1, "y": 5}, "clamp() with its low bound above its high bound"),
    ],
)
def test_evaluation_errors_have_short_reasons(
    text: str, env: dict[str, Value], reason: str
) -> None:
    formula = compile_formula(text, NAMES)
    with pytest.raises(EvalError) as info:
        formula.evaluate(env)
    assert str(info.value) == reason


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("x ** 2", "'**' is not allowed (write x * x)", 3),
        ("(x) // 2", "'//' is not allowed", 5),
        ("x & 1", "'&' is not allowed (use bit(x, N))", 3),
        ("x << 1", "'<<' is not allowed", 3),
        ("~x", "'~' is not allowed", 1),
        ("x is y", "'is' is not allowed (use ==)", 1),
        ("x in y", "'in' is not allowed", 1),
        ("x.real", "an attribute is not allowed ('.')", 1),
        ("x[0]", "indexing is not allowed ('[ ]')", 1),
        ("x if y else 1", "'x if c else y' is not allowed", 1),
        ("lambda: x", "lambda is not allowed", 1),
        ("x, y", "a tuple is not allowed (',')", 1),
        ("'on' == mode", "the constant 'on' is not allowed", 1),
        ("True and x", "the constant True is not allowed", 1),
        ("x + __import__('os')", "the function '__import__' is not allowed", 5),
        ("eval(x)", "the function 'eval' is not allowed", 1),
        ("x.__class__()", "this call is not allowed", 1),
        ("[x for x in y]", "a comprehension is not allowed", 1),
        ("(x for x in y)", "a comprehension is not allowed", 1),
        ("f'{x}'", "an f-string is not allowed", 1),
        ("(y := x)", "':=' is not allowed", 2),
    ],
)
def test_refused_constructs_say_what_and_where(text: str, message: str, column: int) -> None:
    with pytest.raises(FormulaError) as info:
        compile_formula(text, NAMES)
    assert info.value.message.startswith(message), info.value.message
    assert info.value.column == column
    assert f"(column {column})" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x +", "cannot parse the formula"),
        ("x + )", "cannot parse the formula"),
        ("", "an empty formula"),
        ("   ", "an empty formula"),
        ("1 + 2", "the formula uses no tag"),
        ("abs", "abs is a function: write abs(...)"),
        ("abs(x, y)", "abs() takes abs(x)"),
        ("sqrt()", "sqrt() takes sqrt(x)"),
        ("min(x)", "min() takes min(a, b, ...) with at least two arguments"),
        ("round(x, 1, 2)", "round() takes round(x) or round(x, N)"),
        ("clamp(x, 1)", "clamp() takes clamp(x, low, high)"),
        ("bit(x)", "bit() takes bit(x, N)"),
        ("bit(x, y)", "the bit number of bit(x, N) must be a whole number 0..63"),
        ("bit(x, 64)", "the bit number of bit(x, N) must be a whole number 0..63"),
        ("bit(x, 1.0)", "the bit number of bit(x, N) must be a whole number 0..63"),
        ("round(x, 10)", "the digits of round(x, N) must be a whole number 0..9"),
        ("max(x=1, y=2)", "max(): give its arguments by position"),
        ("max(*x)", "max(): give its arguments by position"),
    ],
)
def test_bad_formulas_are_refused(text: str, message: str) -> None:
    with pytest.raises(FormulaError) as info:
        compile_formula(text, NAMES)
    assert info.value.message.startswith(message), info.value.message


def test_an_unknown_tag_is_named() -> None:
    with pytest.raises(UnknownName) as info:
        compile_formula("p_kw + q_kvr", NAMES)
    assert info.value.name == "q_kvr"
    assert info.value.column == 8
    assert str(info.value) == "unknown tag 'q_kvr' (column 8)"


def test_length_is_bounded() -> None:
    long = " + ".join(["x"] * 100)
    assert len(long) > MAX_FORMULA
    with pytest.raises(FormulaError, match=f"at most {MAX_FORMULA} characters"):
        compile_formula(long, NAMES)
    assert compile_formula(long[:MAX_FORMULA].rstrip(" +"), NAMES).kind == "float"


def test_columns_count_from_the_written_text() -> None:
    with pytest.raises(FormulaError) as info:
        compile_formula("  x ** 2", NAMES)
    assert info.value.column == 5
    # a folded YAML string: the newline is a space
    assert compile_formula("x +\n y", NAMES).evaluate({"x": 1, "y": 2}) == 3.0


def test_equal_formulas_compare_equal_whatever_their_closures() -> None:
    a, b = compile_formula("x + 1", NAMES), compile_formula("x + 1", NAMES)
    assert a == b
    assert a != compile_formula("x + 2", NAMES)


def test_evaluation_is_cheap_enough_per_reading() -> None:
    formula = compile_formula("sqrt(p_kw * p_kw + q_kvar * q_kvar)", NAMES)
    env: dict[str, Value] = {"p_kw": 3.0, "q_kvar": 4.0}
    total = sum(float(formula.evaluate(env)) for _ in range(10_000))
    assert math.isclose(total, 50_000.0)
