"""F23: the gateway dialects (ThingsBoard, Alink, IoTDA) under the core faults.

The agent process against the cloud stand-ins of ``tests/support/clouds.py``
on a Mosquitto with persistence (the stand-ins hold persistent sessions, so a
loss they see is the agent's, as in F4), through a fault proxy in front of the
CONNECT gate (agent -> proxy -> gate -> broker). Per dialect, in one run each:

- the network fails (F1, F3): refused and reset for ``OUTAGE_S``; a black
  hole until the agent gives the link up; PUBACKs (and every other byte
  towards the agent) dropped until the agent judges the link dead, with a
  window of ``WINDOW``. After each, the next connection says hello again
  (ThingsBoard connects, Alink topo add and logins, IoTDA ONLINE statuses)
  and what the broker had without a PUBACK is sent again;
- the broker is stopped and started again (F4), then the agent is killed
  with SIGKILL a few times at random moments (F6).

For Alink also a lost ``post_reply``: the stand-in stays silent for one
post, the publisher's reply timeout (2 x keepalive after the PUBACK) drops
the link and the post is sent again.

Pass: every committed seq arrives, in order per device; a repeat only after
a new connection, at most ``max_inflight`` per connection; the buffer passes
``quick_check`` after each kill.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from agent.status.document import StatusDocument
from tests.faults.harness import quick_check, wait_status
from tests.faults.proxy import Mode
from tests.support.clouds import AlinkCloud, IotdaCloud, ThingsboardCloud
from tests.support.gateways import GatewayDialect, GatewayRig

KILLS = 3
KEEPALIVE_S = 5  # the rig's
OUTAGE_S = 3.0
WINDOW = 20  # max_inflight of the network-fault runs
DEAD_S = 2 * KEEPALIVE_S + 10  # the agent gives a silent link up within 2 x keepalive


def _ready(rig: GatewayRig, timeout: float = 30) -> None:
    def ready(doc: StatusDocument) -> bool:
        dest = doc["destinations"][rig.dialect]
        return bool(dest["connected"] and dest["ready"])

    wait_status(rig.agent, ready, timeout)


def _flowing(rig: GatewayRig, more: int = 10, timeout: float = 30) -> None:
    seen = len(rig.cloud.seqs())
    assert rig.cloud.wait(lambda: len(rig.cloud.seqs()) >= seen + more, timeout), (
        rig.cloud.events[-5:], rig.agent.log()[-2000:],
    )  # fmt: skip


def _hellos(rig: GatewayRig) -> dict[str, int]:
    """Per cloud device name, the hellos of the gateway so far (one per device per connection)."""
    cloud, names = rig.cloud, [rig.cloud_name(n) for n in rig.names]
    with cloud.lock:
        if isinstance(cloud, AlinkCloud):
            return {n: cloud.logins.get(n, 0) for n in names}
        if isinstance(cloud, ThingsboardCloud):
            return {n: sum(1 for e in cloud.kinds("connect") if e[1] == n) for n in names}
        assert isinstance(cloud, IotdaCloud)
        return {n: cloud.statuses.get(n, []).count("ONLINE") for n in names}


def _recovered(rig: GatewayRig, before: dict[str, int]) -> None:
    """The link is back, every device said hello again since ``before``, data flows."""
    _ready(rig)
    assert rig.cloud.wait(
        lambda: all(v > before[n] for n, v in _hellos(rig).items()), 20
    ), (before, _hellos(rig), rig.cloud.events[-10:])  # fmt: skip
    _flowing(rig, 5)


def _repeats(rig: GatewayRig) -> int:
    """Samples received more than once so far."""
    with rig.cloud.lock:
        got = [(d, s.seq) for d, v in rig.cloud.samples.items() for s in v]
    return len(got) - len(set(got))


def _down(rig: GatewayRig, timeout: float) -> StatusDocument:
    return wait_status(rig.agent, lambda d: not d["destinations"][rig.dialect]["connected"],
                       timeout)  # fmt: skip


def _outage(rig: GatewayRig) -> None:
    """F1: connects refused and open links reset for ``OUTAGE_S``."""
    rig.proxy.set(Mode.REFUSE)
    rig.proxy.reset_connections()
    _down(rig, 15)
    time.sleep(OUTAGE_S)  # the outage itself
    held = rig.destination()["pending_batches"]
    assert held >= OUTAGE_S * 5, f"the buffer absorbs it: {held} pending"
    before = _hellos(rig)
    rig.proxy.set(Mode.PASS)
    _recovered(rig, before)


def _blackhole(rig: GatewayRig) -> None:
    """F1 half-open: every byte swallowed until the agent gives the link up itself."""
    t0 = time.monotonic()
    rig.proxy.set(Mode.BLACKHOLE)
    _down(rig, DEAD_S)
    assert time.monotonic() - t0 >= KEEPALIVE_S - 1, "no byte came back: the agent waited"
    before = _hellos(rig)
    rig.proxy.set(Mode.PASS)
    rig.proxy.reset_connections()  # what the black hole holds (a connect under way) is dead
    _recovered(rig, before)


def _puback_loss(rig: GatewayRig) -> None:
    """F3: broker -> agent bytes dropped until the agent judges the link dead."""
    dropped, repeats = rig.proxy.stats.discarded_s2c, _repeats(rig)
    rig.proxy.set(Mode.DROP_S2C)
    _down(rig, DEAD_S)
    assert rig.proxy.stats.discarded_s2c > dropped, "PUBACKs were on their way and dropped"
    before = _hellos(rig)
    rig.proxy.set(Mode.PASS)
    rig.proxy.reset_connections()  # a connect under way lost its CONNACK: do not wait it out
    _recovered(rig, before)
    assert _repeats(rig) > repeats, "the broker had them without PUBACK: they are sent again"


@pytest.mark.parametrize("dialect", ["thingsboard", "alink", "iotda"])
def test_f23_network_faults_lose_nothing(tmp_path: Path, dialect: GatewayDialect) -> None:
    """F1 (refused + reset, black hole) then F3 (PUBACK loss), one run per dialect."""
    with GatewayRig(tmp_path, dialect, interval="100ms", north={"max_inflight": WINDOW}) as rig:
        _ready(rig)
        _flowing(rig)
        _outage(rig)
        _blackhole(rig)
        _puback_loss(rig)
        reconnects = int(rig.destination()["reconnects"])
        judgement = rig.finish(window=WINDOW)
    assert reconnects >= 3
    assert rig.gate.refused() == [], "every CONNECT after a fault signed as documented"
    assert judgement.problems() == []
    assert judgement.missing == [], "nothing committed may be lost"
    if isinstance(rig.cloud, AlinkCloud):
        assert rig.cloud.not_logged_in == [], "a post for a sub-device not logged in again"
        assert rig.cloud.after_logout == []


@pytest.mark.parametrize("dialect", ["thingsboard", "alink", "iotda"])
def test_f23_broker_restart_and_sigkill_lose_nothing(
    tmp_path: Path, dialect: GatewayDialect
) -> None:
    rng = random.Random(23)
    with GatewayRig(tmp_path, dialect, interval="100ms") as rig:
        _ready(rig)
        _flowing(rig)
        # F4: the broker goes away for a while and comes back on the same port
        rig.broker.stop()
        wait_status(rig.agent, lambda d: not d["destinations"][dialect]["connected"], 15)
        time.sleep(2)
        rig.broker.start()
        _ready(rig)
        _flowing(rig)
        reconnected = rig.gate.accepted
        assert reconnected >= 2
        # F6: SIGKILL at random moments, started again each time
        committed = 0
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))
            committed = max(committed, int(rig.agent.status()["buffer"]["last_seq"]))
            rig.agent.kill()
            assert quick_check(rig.agent.buffer) == ["ok"]
            rig.agent.start()
            _ready(rig)
            _flowing(rig, 5)
        judgement = rig.finish()
    assert rig.gate.accepted >= reconnected + KILLS
    assert rig.gate.refused() == []
    assert judgement.last_seq >= committed > 0
    assert judgement.problems() == []
    assert judgement.missing == [], "nothing committed may be lost"


def test_f23_alink_lost_post_reply_drops_the_link_and_the_post_is_sent_again(
    tmp_path: Path,
) -> None:
    with GatewayRig(tmp_path, "alink", interval="100ms") as rig:
        cloud = rig.cloud
        assert isinstance(cloud, AlinkCloud)
        _ready(rig)
        _flowing(rig)
        posts = len(cloud.posts)
        cloud.answer_next(None)
        assert cloud.wait(lambda: any(p.code is None for p in cloud.posts[posts:]), 20)
        silent = next(p for p in cloud.posts[posts:] if p.code is None)
        wanted = {(d, s) for d, s, _ in silent.samples}
        t0 = time.monotonic()
        wait_status(rig.agent, lambda d: d["destinations"]["alink"]["reconnects"] >= 1,
                    2 * KEEPALIVE_S + 15)  # fmt: skip
        waited = time.monotonic() - t0
        at = cloud.posts.index(silent)
        assert cloud.wait(
            lambda: (
                wanted
                <= {(d, s) for p in cloud.posts[at + 1 :] if p.code == 200 for d, s, _ in p.samples}
            ),
            30,
        ), "the unanswered post was not sent again"
        _flowing(rig)
        judgement = rig.finish()
    assert "no reply from the cloud" in rig.agent.log()
    assert waited >= 2 * KEEPALIVE_S - 3, f"the link was dropped after {waited:.1f} s"
    assert judgement.problems() == []
    assert judgement.missing == []
    assert judgement.duplicates, "the posts after the silent one were sent again"
