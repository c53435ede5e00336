"""End to end: simulated DL/T 645 meters on a pty and a TCP serial server, the agent as a
real process, a real Mosquitto; the shipped CHINT DTSU666 DL/T 645 profile decodes them."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from simulators.dlt645_meter import Meter, MeterLine, PtyMeters, TcpMeters
from tests.support.agentproc import AgentProcess, site_dict
from tests.support.mosquitto import Mosquitto, Received, Subscriber

AGENT = "e2e-dlt645"


class MeterThread:
    """Two meters on one pty line and one behind a TCP serial server, on their own loop."""

    def __init__(self) -> None:
        self.pty_line = MeterLine([Meter("000000000161"), Meter("000000000162")])
        self.tcp_line = MeterLine([Meter("000000000163")])
        self.pty_path = ""
        self.tcp_url = ""
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="dlt645-sim", daemon=True)

    def _main(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with PtyMeters(self.pty_line) as pty, TcpMeters(self.tcp_line) as tcp:
            self.pty_path, self.tcp_url = pty.path, tcp.url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10), "the meter simulator did not start"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def meter_device(device_id: str, port: str, address: str) -> dict[str, Any]:
    return {
        "id": device_id,
        "profile": "chint-dtsu666-dlt645",
        "connection": {"dlt645": {"port": port, "timeout": "500ms"}},
        "protocol": {"address": address},
        "poll_groups": {"fast": "1s", "slow": "2s"},
    }


def _latest(received: list[Received]) -> dict[str, dict[str, Any]]:
    values: dict[str, dict[str, Any]] = {}
    for message in received:
        if message.topic.endswith("/status"):
            continue
        body = json.loads(message.payload)
        for reading in body["readings"]:
            values.setdefault(body["device"], {}).update(reading["values"])
    return values


def test_meters_on_a_pty_and_a_tcp_serial_server_reach_the_broker(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with MeterThread() as sims, Subscriber(mosquitto.port, f"edge/{AGENT}/#") as sub:
        devices = [
            meter_device("meter-161", sims.pty_path, "000000000161"),
            meter_device("meter-162", sims.pty_path, "000000000162"),
            meter_device("meter-163", sims.tcp_url, "000000000163"),
        ]
        with AgentProcess(tmp_path, site_dict(AGENT, mosquitto.port, devices)):

            def complete(received: list[Received]) -> bool:
                latest = _latest(received)
                return all(len(latest.get(d["id"], {})) == 16 for d in devices)

            received = sub.wait_for(complete, timeout=40)
    latest = _latest(received)
    for device, energy in (("meter-161", 161.25), ("meter-162", 162.25), ("meter-163", 163.25)):
        values = latest[device]
        assert values["energy_kwh"] == energy
        assert values["import_energy_kwh"] == energy
        assert values["export_energy_kwh"] == 12.5
        assert values["l2_voltage_v"] == 230.2
        assert values["l3_current_a"] == 3.234
        assert values["total_power_kw"] == -0.6702
        assert values["l1_power_kw"] == -0.1234
        assert values["total_power_factor"] == 0.987
        assert values["frequency_hz"] == 50.01
