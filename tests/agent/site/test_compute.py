"""Derived tags in profiles and site files: merged, ordered, typed, located when wrong.

The located refusals of every kind are the case ``tests/cases/config/compute-errors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.north.session import TagSpec
from agent.runtime.reload import plan_reload
from agent.runtime.sessions import device_facts
from agent.site.loader import Site, load_site
from agent.site.source import ConfigFileError

BASE = {
    "profile": "meter-base",
    "version": 1,
    "poll_groups": {"fast": "1s", "slow": "10s"},
    "tags": {
        "p_kw": {"address": 0, "type": "float32", "group": "fast", "unit": "kW"},
        "q_kvar": {"address": 2, "type": "float32", "group": "fast"},
        "status_word": {"address": 4, "type": "uint16", "group": "fast"},
        "energy_kwh": {"address": 6, "type": "float32", "group": "slow"},
    },
    "compute": {
        "s_kva": {"expr": "sqrt(p_kw * p_kw + q_kvar * q_kvar)", "unit": "kVA"},
        "running": {"expr": "bit(status_word, 3)"},
        "energy_mwh": {"expr": "energy_kwh / 1000", "unit": "MWh", "deadband": 0.001},
    },
}


def write_site(tmp_path: Path, device: dict[str, Any], *profiles: dict[str, Any]) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    for profile in profiles or (BASE,):
        text = yaml.safe_dump(profile, sort_keys=False)
        (folder / f"{profile['profile']}.yaml").write_text(text, encoding="utf-8")
    entry = {"id": "m1", "connection": {"modbus_tcp": {"host": "127.0.0.1"}}, **device}
    site = {"agent": {"id": "box-1"}, "devices": [entry]}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
    return path


def load(tmp_path: Path, device: dict[str, Any], *profiles: dict[str, Any]) -> Site:
    return load_site(write_site(tmp_path, device, *profiles), env={})


def test_a_profile_declares_derived_tags_in_order_with_their_group_and_type(
    tmp_path: Path,
) -> None:
    device = load(tmp_path, {"profile": "meter-base"}).device("m1")
    derived = {d.name: d for d in device.derived}
    assert list(derived) == ["s_kva", "running", "energy_mwh"]
    assert derived["s_kva"].attrs.group == "fast"
    assert derived["energy_mwh"].attrs.group == "slow"
    assert derived["energy_mwh"].attrs.deadband == 0.001
    assert derived["s_kva"].formula.kind == "float"
    assert derived["running"].formula.kind == "bool"
    assert derived["s_kva"].formula.inputs == ("p_kw", "q_kvar")


def test_the_dialects_are_told_derived_tags_with_their_type_and_unit(tmp_path: Path) -> None:
    facts = device_facts(load(tmp_path, {"profile": "meter-base"}).devices)["m1"]
    specs = {s.name: s for s in facts.tags}
    assert specs["p_kw"] == TagSpec("p_kw", None, "kW")
    assert specs["s_kva"] == TagSpec("s_kva", "Double", "kVA")
    assert specs["running"] == TagSpec("running", "Boolean", None)


def test_a_site_changes_adds_and_drops_derived_tags(tmp_path: Path) -> None:
    device = load(
        tmp_path,
        {
            "profile": "meter-base",
            "compute": {
                "s_kva": {"unit": "VA", "expr": "1000 * sqrt(p_kw * p_kw + q_kvar * q_kvar)"},
                "pf": {"expr": "p_kw / s_kva", "heartbeat": "1m"},
            },
            "drop_tags": ["running"],
        },
    ).device("m1")
    derived = {d.name: d for d in device.derived}
    assert list(derived) == ["s_kva", "energy_mwh", "pf"]
    assert derived["s_kva"].attrs.unit == "VA"
    assert derived["pf"].attrs.heartbeat == 60.0
    assert derived["pf"].attrs.group == "fast"
    assert "derived tag s_kva: unit kVA -> VA" in device.changes
    assert "derived tag running dropped" in device.changes
    assert any(c.startswith("derived tag pf added") for c in device.changes)


def test_a_device_without_a_profile_may_declare_derived_tags(tmp_path: Path) -> None:
    device = load(
        tmp_path,
        {
            "tags": {"temp_c": {"address": 0, "type": "int16", "scale": 0.1}},
            "compute": {"temp_f": {"expr": "temp_c * 9 / 5 + 32", "unit": "degF"}},
        },
    ).device("m1")
    assert [d.name for d in device.derived] == ["temp_f"]
    assert device.derived[0].attrs.group == "default"


def test_a_derived_tag_formula_may_use_a_parameter(tmp_path: Path) -> None:
    profile = {
        **BASE,
        "params": {"ct_ratio": 1},
        "compute": {"p_primary_kw": {"expr": "p_kw * ${param.ct_ratio}"}},
    }
    device = load(tmp_path, {"profile": "meter-base", "params": {"ct_ratio": 40}}, profile)
    (derived,) = device.device("m1").derived
    assert derived.formula.text == "p_kw * 40"
    assert derived.formula.evaluate({"p_kw": 2.0}) == 80.0


def test_an_extending_profile_replaces_and_drops_derived_tags(tmp_path: Path) -> None:
    child = {
        "profile": "meter-child",
        "version": 1,
        "extends": "meter-base",
        "compute": {"running": {"expr": "bit(status_word, 4)"}},
        "drop_tags": ["energy_mwh"],
    }
    device = load(tmp_path, {"profile": "meter-child"}, BASE, child).device("m1")
    derived = {d.name: d for d in device.derived}
    assert list(derived) == ["s_kva", "running"]
    assert derived["running"].formula.text == "bit(status_word, 4)"


def test_a_profile_entry_without_a_formula_is_located_in_the_profile(tmp_path: Path) -> None:
    profile = {**BASE, "compute": {"s_kva": {"unit": "kVA"}}}
    with pytest.raises(ConfigFileError) as info:
        load(tmp_path, {"profile": "meter-base"}, profile)
    (problem,) = info.value.problems
    assert problem.where is not None
    assert problem.where.file.name == "meter-base.yaml"
    assert str(problem).endswith("compute.s_kva.expr: is required")


def test_dropping_a_tag_a_formula_uses_is_refused_at_the_formula(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as info:
        load(tmp_path, {"profile": "meter-base", "drop_tags": ["q_kvar"]})
    (problem,) = info.value.problems
    assert problem.where is not None
    assert problem.where.file.name == "meter-base.yaml"
    assert problem.path == "devices[0].compute.s_kva.expr"
    assert "unknown tag 'q_kvar'" in problem.message


def test_a_reload_that_changes_only_a_formula_restarts_the_device(tmp_path: Path) -> None:
    running = load(tmp_path, {"profile": "meter-base"})
    same = load(tmp_path, {"profile": "meter-base"})
    assert plan_reload(running, same).empty
    changed = load(
        tmp_path, {"profile": "meter-base", "compute": {"running": {"expr": "bit(status_word, 5)"}}}
    )
    assert [d.id for d in plan_reload(running, changed).changed] == ["m1"]


def test_the_shipped_sdm630_profile_derives_kw_and_net_energy(tmp_path: Path) -> None:
    device = load(tmp_path, {"profile": "eastron-sdm630"}).device("m1")
    derived = {d.name: d for d in device.derived}
    assert derived["total_power_kw"].formula.evaluate({"total_power_w": 2500.0}) == 2.5
    assert derived["total_power_kw"].attrs.group == "fast"
    net = derived["net_energy_kwh"]
    assert net.attrs.group == "slow"
    assert net.formula.evaluate({"import_energy_kwh": 10.0, "export_energy_kwh": 4.0}) == 6.0
