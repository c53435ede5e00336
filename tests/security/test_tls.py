"""MQTT over TLS with a CA, a client certificate and key, and a password, end to end.

Mosquitto here requires a client certificate signed by the test CA
(``require_certificate true``) and a user name and password. The agent runs
as ``edge-agent run``. A wrong client certificate, a wrong CA and a wrong
password each show as a clear ``broker.last_error`` in ``status`` and in the
log while the buffer keeps growing; once the site file is corrected the agent
delivers every batch it buffered, seq 1, 2, 3... without a gap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.status.document import StatusDocument
from simulators.run import SimDevice
from tests.security.support import data_messages, relative, seqs, start_agent, wait_until
from tests.support.agentproc import counter_device, site_dict
from tests.support.mosquitto import Mosquitto, MosquittoTls, Subscriber, TestCerts
from tests.support.simthread import SimThread

AGENT = "tls-box"
USER = "box-017"
PASSWORD = "tls-Pw-5e1c"
ENV = {"EDGE_TEST_MQTT_PASSWORD": PASSWORD}


@pytest.fixture
def tls_broker(tmp_path: Path, certs: TestCerts) -> Iterator[Mosquitto]:
    """Mosquitto with TLS only, client certificates required, one user."""
    tls = MosquittoTls(certs.ca, certs.server_cert, certs.server_key, require_certificate=True)
    broker = Mosquitto(tmp_path / "broker", users={USER: PASSWORD}, tls=tls)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _site(
    workdir: Path, broker: Mosquitto, sim_port: int, *, ca: Path, cert: Path, key: Path
) -> dict[str, Any]:
    # relative paths: they are resolved against the site file, whatever the agent's cwd
    tls = {
        name: relative(path, workdir) for name, path in (("ca", ca), ("cert", cert), ("key", key))
    }
    mqtt = {"username": USER, "password": "${EDGE_TEST_MQTT_PASSWORD}", "tls": tls}
    return site_dict(AGENT, broker.port, [counter_device("c1", sim_port, "100ms")], mqtt=mqtt)


def _refused(workdir: Path, site: dict[str, Any]) -> tuple[str, str, str, int]:
    """Run the agent against a broker that refuses it.

    Returns ``status --json``'s last error, the ``status`` table, the log, and
    the last seq committed, once the buffer has been seen growing.
    """
    agent = start_agent(workdir, site, ENV)
    try:

        def piling_up() -> StatusDocument | None:
            d = agent.status()
            return d if d["broker"]["last_error"] and d["buffer"]["pending_batches"] >= 3 else None

        doc = wait_until(piling_up, 30, "a broker error while batches pile up")
        assert doc["broker"]["connected"] is False
        before = doc["buffer"]["pending_batches"]
        wait_until(
            lambda: agent.status()["buffer"]["pending_batches"] > before, 20, "the buffer grows"
        )
        shown = agent.command("status", "--json")
        table = agent.command("status")
        last_seq = agent.status()["buffer"]["last_seq"]
        # SIGKILL: a clean stop would wait its whole drain time for a broker that refuses
        agent.kill()
    finally:
        agent.__exit__(None, None, None)
    assert shown.returncode == 0, shown.stderr
    error = json.loads(shown.stdout)["broker"]["last_error"]
    return error, " ".join(table.stdout.split()), agent.log(), last_seq


def test_mutual_tls_errors_are_clear_and_nothing_is_lost(
    tmp_path: Path, tls_broker: Mosquitto, certs: TestCerts, foreign_certs: TestCerts
) -> None:
    workdir = tmp_path / "agent"
    good = {"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key}
    broken = {
        # (what is wrong, site options, words the error must hold)
        "client certificate": ({**good, "cert": foreign_certs.client_cert,
                                "key": foreign_certs.client_key}, ("mqtt.tls.cert",)),
        "CA": ({**good, "ca": foreign_certs.ca}, ("certificate", "mqtt.tls.ca")),
        "password": (good, ("mqtt.username/password",)),
    }  # fmt: skip
    last_seq = 0
    with SimThread([SimDevice("c1", "counter")]) as sims:
        port = sims.ports["c1"]
        for what, (files, words) in broken.items():
            site = _site(workdir, tls_broker, port, **files)
            if what == "password":
                site["mqtt"]["password"] = "not-the-password"
            error, table, log, seq = _refused(workdir, site)
            for word in words:
                assert word in error, f"wrong {what}: {error!r} does not say {word!r}"
            assert words[0] in table, f"wrong {what}: `status` does not show the error"
            warned = [line for line in log.splitlines() if "batches stay buffered" in line]
            assert warned, f"wrong {what}: no warning in the log"
            assert words[0] in warned[-1], warned[-1]
            assert seq > last_seq, f"wrong {what}: nothing was buffered"
            last_seq = seq
        with Subscriber(
            tls_broker.port, f"edge/{AGENT}/#", username=USER, password=PASSWORD,
            tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key,
        ) as sub:  # fmt: skip
            agent = start_agent(workdir, _site(workdir, tls_broker, port, **good), ENV)
            try:
                got = sub.wait_for(lambda r: set(range(1, last_seq + 6)) <= seqs(r), 60)
                doc = agent.status()
                assert agent.stop() == 0
            finally:
                agent.__exit__(None, None, None)
    assert doc["broker"]["connected"] is True
    messages = data_messages(got)
    assert min(m["seq"] for m in messages) == 1
    for message in messages:
        values = message["readings"][0]["values"]
        assert values, "a message without values"
        assert all(int(v) % 1000 == int(k[1:]) for k, v in values.items()), "value on wrong tag"
