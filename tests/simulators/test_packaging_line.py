"""The PackML state machine (pure) and the packaging line served over OPC UA."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from asyncua import ua
from asyncua.client.client import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.fault_proxy import FaultProxy
from simulators.packaging_line import NAMESPACE, VARIABLES, node_id, run_packaging_line
from simulators.packml import STATE_COMPLETE, Command, LineConfig, PackagingLine, State, on_command
from simulators.packml import legal_transitions as legal

ROOT = Path(__file__).resolve().parents[2]


def test_transition_table_follows_packml() -> None:
    assert on_command(State.STOPPED, Command.RESET) is State.RESETTING
    assert on_command(State.IDLE, Command.START) is State.STARTING
    assert on_command(State.EXECUTE, Command.SUSPEND) is State.SUSPENDING
    assert on_command(State.SUSPENDED, Command.HOLD) is State.HOLDING
    assert on_command(State.HELD, Command.STOP) is State.STOPPING
    assert on_command(State.STOPPED, Command.STOP) is None
    assert on_command(State.STOPPED, Command.ABORT) is State.ABORTING
    assert on_command(State.ABORTED, Command.ABORT) is None
    assert on_command(State.ABORTED, Command.RESET) is None
    assert on_command(State.IDLE, Command.HOLD) is None
    assert STATE_COMPLETE[State.ABORTING] is State.ABORTED
    assert STATE_COMPLETE[State.CLEARING] is State.STOPPED
    assert (State.EXECUTE, State.ABORTED) not in legal()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.lists(st.floats(0.01, 3.0), max_size=400))
def test_line_makes_only_legal_transitions_and_counters_grow(seed: int, steps: list[float]) -> None:
    line = PackagingLine(seed=seed)
    allowed = legal()
    processed, defective = line.processed, line.defective
    for dt in steps:
        line.step(dt)
        assert line.processed >= processed
        assert line.defective >= defective
        assert line.defective <= line.processed
        assert line.cur_speed >= 0
        assert line.alarm_active == (line.alarm_code != 0)
        processed, defective = line.processed, line.defective
    assert all(pair in allowed for pair in line.history)


@settings(max_examples=40, deadline=None)
@given(commands=st.lists(st.sampled_from(list(Command)), max_size=60))
def test_refused_commands_change_nothing(commands: list[Command]) -> None:
    line = PackagingLine(seed=1)
    for command in commands:
        before = line.state
        taken = line.command(command)
        assert taken == (on_command(before, command) is not None)
        assert (line.state == before) != taken or before == line.state == on_command(
            before, command
        )


def test_line_runs_starves_blocks_faults_and_recovers() -> None:
    config = LineConfig(starve_rate=0.05, block_rate=0.05, fault_rate=0.05, complete_rate=0.02)
    line = PackagingLine(seed=3, config=config)
    seen = set()
    for _ in range(20_000):
        line.step(0.1)
        seen.add(line.state)
    assert {State.EXECUTE, State.SUSPENDED, State.HELD, State.ABORTED, State.COMPLETE} <= seen
    assert line.processed > 1000
    assert 0 < line.defective < line.processed


def test_same_seed_same_line() -> None:
    a, b = PackagingLine(seed=9), PackagingLine(seed=9)
    for _ in range(3000):
        a.step(0.1)
        b.step(0.1)
    assert (a.state, a.processed, a.history) == (b.state, b.processed, b.history)


async def test_server_serves_the_line_in_namespace_2() -> None:
    async with run_packaging_line(seed=2, tick=None) as handle:
        await handle.advance(30.0)
        async with Client(handle.endpoint, timeout=10) as client:
            assert (await client.get_namespace_array()).index(NAMESPACE) == 2
            for name in VARIABLES:
                value = await client.get_node(node_id(name)).read_value()
                assert value == await handle.value(name), name
            state = await client.get_node(node_id("StateCurrent")).read_value()
            assert state == int(handle.line.state)
            variant = await client.get_node(node_id("ProdProcessedCount")).read_data_value()
            assert variant.Value is not None
            assert variant.Value.VariantType == ua.VariantType.Int32  # PackTags AccCount


def test_profile_names_existing_nodes() -> None:
    profile = yaml.safe_load((ROOT / "config/profiles/packml-line.yaml").read_text())
    assert set(profile) <= {
        "profile",
        "version",
        "vendor",
        "model",
        "description",
        "source",
        "notes",
        "protocol",
        "poll_groups",
        "tags",
        "machine",
    }
    prefix = f"nsu={NAMESPACE};s=Line1."
    names = {tag["node"].removeprefix(prefix) for tag in profile["tags"].values()}
    assert names == set(VARIABLES)


@pytest.mark.parametrize("kind", ["bogus", "restart"])
async def test_unknown_fault_is_refused(kind: str) -> None:
    proxy = FaultProxy("127.0.0.1", 1)
    with pytest.raises(ValueError, match="unknown fault"):
        proxy.set(kind)
