"""Derived tags on readings: values joined, errors carried over with their reason."""

from __future__ import annotations

import math

from agent.compute.derive import Derivation, Deriver
from agent.formula import compile_formula
from drivers.base import Reading

TAGS = ("p_kw", "q_kvar", "status_word", "mode", "energy_kwh")


def deriver(*entries: tuple[str, str]) -> Deriver:
    names = list(TAGS)
    out = []
    for name, text in entries:
        out.append(Derivation(name, compile_formula(text, names)))
        names.append(name)
    return Deriver(out)


APPARENT = ("s_kva", "sqrt(p_kw * p_kw + q_kvar * q_kvar)")


def test_a_derived_value_joins_the_reading() -> None:
    reading = Reading(1000, {"p_kw": 3.0, "q_kvar": 4.0}, {}, "unsynced")
    out = deriver(APPARENT, ("running", "bit(status_word, 3)")).apply(reading)
    assert out.values == {"p_kw": 3.0, "q_kvar": 4.0, "s_kva": 5.0}
    assert out.errors == {}
    assert (out.ts, out.clock) == (1000, "unsynced")
    assert reading.values == {"p_kw": 3.0, "q_kvar": 4.0}, "the driver's reading is not changed"


def test_a_bool_derived_tag_gives_a_bool() -> None:
    out = deriver(("running", "bit(status_word, 3)")).apply(Reading(1, {"status_word": 8}))
    assert out.values["running"] is True


def test_an_input_in_error_makes_the_derived_tag_an_error_with_its_reason() -> None:
    reading = Reading(1, {"q_kvar": 4.0}, {"p_kw": "timeout"})
    out = deriver(APPARENT).apply(reading)
    assert out.errors == {"p_kw": "timeout", "s_kva": "input p_kw: timeout"}
    assert "s_kva" not in out.values


def test_the_first_bad_input_in_formula_order_is_named() -> None:
    reading = Reading(1, {}, {"p_kw": "timeout", "q_kvar": "illegal data address"})
    assert deriver(APPARENT).apply(reading).errors["s_kva"] == "input p_kw: timeout"


def test_a_missing_input_is_an_error_not_a_guess() -> None:
    out = deriver(APPARENT).apply(Reading(1, {"p_kw": 3.0}))
    assert out.errors == {"s_kva": "input q_kvar: not in this reading"}


def test_a_reading_without_any_input_leaves_the_derived_tag_out() -> None:
    reading = Reading(1, {"energy_kwh": 12.5})
    out = deriver(APPARENT).apply(reading)
    assert out is reading


def test_nan_and_infinite_inputs_are_errors() -> None:
    d = deriver(APPARENT)
    assert d.apply(Reading(1, {"p_kw": math.nan, "q_kvar": 1.0})).errors == {
        "s_kva": "input p_kw: NaN"
    }
    assert d.apply(Reading(1, {"p_kw": 1.0, "q_kvar": -math.inf})).errors == {
        "s_kva": "input q_kvar: infinite"
    }


def test_formula_failures_are_errors() -> None:
    d = deriver(
        ("pf", "p_kw / q_kvar"),
        ("root", "sqrt(p_kw)"),
        ("next_mode", "mode + 1"),
    )
    out = d.apply(Reading(1, {"p_kw": -2.0, "q_kvar": 0.0, "mode": "auto"}))
    assert out.errors == {
        "pf": "division by zero",
        "root": "sqrt of a negative number",
        "next_mode": "input mode: text, not a number",
    }
    assert set(out.values) == {"p_kw", "q_kvar", "mode"}


def test_a_derived_tag_may_use_one_declared_above_and_inherits_its_error() -> None:
    d = deriver(APPARENT, ("s_va", "s_kva * 1000"), ("pf", "p_kw / s_kva"))
    good = d.apply(Reading(1, {"p_kw": 3.0, "q_kvar": 4.0}))
    assert good.values["s_va"] == 5000.0
    assert good.values["pf"] == 0.6
    bad = d.apply(Reading(1, {"p_kw": 3.0}, {"q_kvar": "crc error"}))
    assert bad.errors == {
        "q_kvar": "crc error",
        "s_kva": "input q_kvar: crc error",
        "s_va": "input s_kva: input q_kvar: crc error",
        "pf": "input s_kva: input q_kvar: crc error",
    }


def test_an_all_bad_reading_makes_every_derived_tag_bad() -> None:
    reading = Reading(1, {}, dict.fromkeys(TAGS, "connection refused"))
    out = deriver(APPARENT, ("running", "bit(status_word, 3)")).apply(reading)
    assert out.values == {}
    assert out.errors["s_kva"] == "input p_kw: connection refused"
    assert out.errors["running"] == "input status_word: connection refused"


def test_no_derived_tags_is_the_same_reading() -> None:
    reading = Reading(1, {"p_kw": 1.0})
    d = Deriver([])
    assert not d.active
    assert d.apply(reading) is reading
