"""F4: the broker is stopped and restarted.

The agent keeps no state at the broker (clean session), so to the agent this
is a broker without persistence. The *checker* must not lose what the broker
accepted while the checker was away, so the broker runs with persistence and
the checker holds a persistent session: every loss the checker sees is then
the agent's, not the test rig's.

Pass: nothing lost; the agent reconnects within reconnect_max + 1 s of the
broker coming back (measured through status polling, asserted loosely).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from agent.status.document import StatusDocument
from tests.faults.harness import Rig, wait_status
from tests.support.mosquitto import Mosquitto

RECONNECT_MAX_S = 2.0
SLACK_S = 3.0  # status polling, process start-up of mosquitto, a loaded CI box


def test_f04_broker_restart_loses_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    with Rig(tmp_path, broker, devices=2, interval="100ms",
             mqtt={"reconnect_max": f"{RECONNECT_MAX_S}s"}) as rig:  # fmt: skip
        assert rig.checker.wait_for_count(10)
        delays = []
        for _ in range(2):
            broker.stop()
            wait_status(rig.agent, lambda d: not d["broker"]["connected"], 15)
            time.sleep(3)
            broker.start()
            t0 = time.monotonic()
            wait_status(rig.agent, lambda d: d["broker"]["connected"], 30)
            delays.append(time.monotonic() - t0)
        report = rig.finish()
    assert report.problems() == []
    assert report.missing == []
    assert max(delays) < RECONNECT_MAX_S + 1 + SLACK_S, delays


OUTAGE_S = 15.0
NOTICED_S = 5.0  # the broker's return, seen as a new PUBACK: within seconds, not a backoff away


def _published_more(than: int, doc: StatusDocument) -> bool:
    return doc["broker"]["messages_published"] > than


def test_f04_return_noticed_within_seconds_with_the_defaults(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The agent on the broker's own port with the shipped backoff (0.5 s to 30 s).

    After a 15 s outage the exponential backoff alone sleeps up to 30 s past
    the return; watching the port ends the sleep once it answers again.
    """
    with Rig(tmp_path, broker, devices=2, interval="100ms", direct=True,
             mqtt={"reconnect_max": "30s"}) as rig:  # fmt: skip
        assert rig.checker.wait_for_count(10)
        port = broker.port
        delays = []
        for _ in range(2):
            broker.stop()
            down = wait_status(rig.agent, lambda d: not d["broker"]["connected"], 15)
            time.sleep(OUTAGE_S)
            published = rig.agent.status()["broker"]["messages_published"]
            assert published >= down["broker"]["messages_published"]
            broker.start()
            assert broker.port == port, "the broker came back on another port"
            t0 = time.monotonic()
            wait_status(rig.agent, partial(_published_more, published), 60)
            delays.append(time.monotonic() - t0)
        report = rig.finish()
    assert report.problems() == []
    assert report.missing == []
    assert max(delays) < NOTICED_S, delays
