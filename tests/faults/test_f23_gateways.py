"""F23: the gateway dialects (ThingsBoard, Alink, IoTDA) under the core faults.

The agent process against the cloud stand-ins of ``tests/support/clouds.py``
on a Mosquitto with persistence (the stand-ins hold persistent sessions, so a
loss they see is the agent's, as in F4). Per dialect, in one run: the broker
is stopped and started again (F4), then the agent is killed with SIGKILL a
few times at random moments (F6). For Alink also a lost ``post_reply``: the
stand-in stays silent for one post, the publisher's reply timeout (2 x
keepalive after the PUBACK) drops the link and the post is sent again.

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
from tests.support.clouds import AlinkCloud
from tests.support.gateways import GatewayDialect, GatewayRig

KILLS = 3
KEEPALIVE_S = 5  # the rig's


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
