"""A gateway-dialect rig: broker, CONNECT gate, cloud stand-in, counter simulators, agent.

``with GatewayRig(tmp_path, "alink") as rig:`` starts a Mosquitto broker with
persistence, a :class:`~tests.support.clouds.ConnectGate` in front of it
checking the dialect's documented credentials, a fault proxy
(``rig.proxy``, :class:`~tests.faults.proxy.ProxyThread`) in front of the
gate (agent -> proxy -> gate -> broker: the proxy plays the network, so its
faults leave the cloud up and every CONNECT crossing it is still checked),
the dialect's cloud stand-in, one counter
simulator per device (each on its own thread and port, so one can be stopped
and started again) and the agent process, whose site file has the dialect as
its only destination (``north:``, no ``mqtt:``), secrets in files and
``${ENV}`` as a contractor would write them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from simulators.run import SimDevice
from tests.faults.harness import offline_buffer
from tests.faults.proxy import ProxyThread
from tests.support.agentproc import AgentProcess, counter_device, site_dict
from tests.support.clouds import (
    AlinkCloud,
    AlinkIdentity,
    CloudStandIn,
    ConnectGate,
    IotdaCloud,
    Judgement,
    ThingsboardCloud,
    alink_connect_check,
    iotda_connect_check,
    tb_connect_check,
)
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.simthread import SimThread

GatewayDialect = Literal["thingsboard", "alink", "iotda"]
AGENT = "gw-box"
TB_TOKEN = "tb-gateway-token-7f3a"
ALI_PK, ALI_DN, ALI_SECRET = "a1GWpk0001", "gw01", "gw-device-secret-Z9"
ALI_SUB_PK = "a1SUBpk002"
HW_GATEWAY, HW_SECRET = "prod_gw01", "hw-gateway-secret-42"


class GatewayRig:
    """The parts of one gateway-dialect run (see the module docstring)."""

    def __init__(
        self, tmp_path: Path, dialect: GatewayDialect, *, devices: int = 2,
        interval: str = "100ms", north: dict[str, Any] | None = None, start_agent: bool = True,
    ) -> None:  # fmt: skip
        self.tmp_path = tmp_path
        self.dialect = dialect
        self.names = [f"c{i}" for i in range(1, devices + 1)]
        self.interval = interval
        self.north = north or {}
        self.start_agent = start_agent
        self.sims: dict[str, SimThread] = {}
        self.device_ports = {name: free_port() for name in self.names}
        self._stack = contextlib.ExitStack()

    def cloud_name(self, device: str) -> str:
        """The cloud's name of an agent device (how the stand-in keys its samples)."""
        return {"thingsboard": device, "alink": f"meter-{device}", "iotda": f"prod_{device}"}[
            self.dialect
        ]

    def __enter__(self) -> Self:
        try:
            s = self._stack
            # The cloud is never away while the agent talks to it; here the stand-in
            # reconnects after a broker restart, perhaps after the agent: its session
            # keeps the QoS 0 logins too (Alibaba gives sub-device messages QoS 0 only).
            self.broker = s.enter_context(
                Mosquitto(
                    self.tmp_path / "broker",
                    persistence=True,
                    extra_config=("queue_qos0_messages true",),
                )
            )
            self.gate = s.enter_context(ConnectGate(self.broker.port, self._check()))
            # the network between the agent and the cloud: what a fault test breaks
            self.proxy = s.enter_context(ProxyThread(self.gate.port))
            self.cloud: CloudStandIn = s.enter_context(self._cloud())
            for name in self.names:
                self.start_device(name)
            s.callback(self._stop_devices)
            self.agent = AgentProcess(self.tmp_path / "agent", self._site())
            self.agent.site_file.chmod(0o640)
            self._write_secrets()
            s.callback(self.agent.__exit__, None, None, None)
            if self.start_agent:
                self.agent.start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    # --- devices

    def start_device(self, name: str) -> None:
        """Serve device ``name``'s counter on its port (again)."""
        sim = SimThread([SimDevice(name, "counter", port=self.device_ports[name])])
        self.sims[name] = sim.__enter__()

    def stop_device(self, name: str) -> None:
        """Stop serving device ``name``: its port refuses connections."""
        self.sims.pop(name).__exit__(None, None, None)

    def _stop_devices(self) -> None:
        for name in list(self.sims):
            self.stop_device(name)

    # --- the agent's end

    def finish(
        self, timeout: float = 60.0, *, allowed_missing: int = 0, window: int = 100
    ) -> Judgement:
        """Stop the agent cleanly, wait for every committed seq, and judge.

        ``window``: the agent's ``max_inflight``, the most repeats one connection may send.
        """
        assert self.agent.stop() == 0, self.agent.log()[-3000:]
        on_disk = offline_buffer(self.agent)
        last = int(on_disk["last_seq"])
        excused = self.cloud.refused_seqs() if isinstance(self.cloud, AlinkCloud) else set()
        self.cloud.wait_for_seqs(last, timeout, allowed_missing + len(excused))
        assert on_disk["pending_batches"] == 0, on_disk
        return self.cloud.judge(last, window=window, excused=excused)

    def destination(self) -> dict[str, Any]:
        """The destination's section of the running agent's status."""
        doc: dict[str, Any] = dict(self.agent.status()["destinations"][self.dialect])
        return doc

    # --- internals

    def _check(self) -> Any:
        if self.dialect == "thingsboard":
            return tb_connect_check(TB_TOKEN)
        if self.dialect == "alink":
            return alink_connect_check(ALI_PK, ALI_DN, ALI_SECRET, securemode=3)
        return iotda_connect_check(HW_GATEWAY, HW_SECRET)

    def _cloud(self) -> CloudStandIn:
        port = self.broker.port
        if self.dialect == "thingsboard":
            return ThingsboardCloud(port, gate=self.gate)
        if self.dialect == "alink":
            subs = [
                AlinkIdentity(ALI_SUB_PK, self.cloud_name(n), _sub_secret(n)) for n in self.names
            ]
            return AlinkCloud(port, ALI_PK, ALI_DN, subs, gate=self.gate)
        return IotdaCloud(port, HW_GATEWAY, gate=self.gate)

    def _site(self) -> dict[str, Any]:
        devices = [counter_device(n, self.device_ports[n], self.interval) for n in self.names]
        site = site_dict(AGENT, 0, devices)
        del site["mqtt"]  # the gateway is the only destination
        entry: dict[str, Any] = {
            "id": self.dialect,
            "dialect": self.dialect,
            "host": "127.0.0.1",
            "port": self.proxy.port,
            "keepalive": "5s",
            "reconnect_max": "2s",
            **self.north,
        }
        if self.dialect == "thingsboard":
            entry["thingsboard"] = {"access_token_file": "secrets/tb.token"}
        elif self.dialect == "alink":
            entry["alink"] = {
                "product_key": ALI_PK,
                "device_name": ALI_DN,
                "device_secret": "${ALI_GW_SECRET}",
                "subdevices": {
                    n: {
                        "product_key": ALI_SUB_PK,
                        "device_name": self.cloud_name(n),
                        "device_secret_file": f"secrets/{n}.secret",
                    }
                    for n in self.names
                },
            }
        else:
            entry["iotda"] = {
                "gateway_id": HW_GATEWAY,
                "secret": "${HW_GW_SECRET}",
                "subdevices": {
                    n: {"device_id": self.cloud_name(n), "service_id": "counter"}
                    for n in self.names
                },
            }
        site["north"] = [entry]
        return site

    def _write_secrets(self) -> None:
        folder = self.agent.workdir / "secrets"
        folder.mkdir(exist_ok=True)
        files = {"tb.token": TB_TOKEN, **{f"{n}.secret": _sub_secret(n) for n in self.names}}
        for name, secret in files.items():
            path = folder / name
            path.write_text(secret + "\n")
            path.chmod(0o600)
        self.agent.env["ALI_GW_SECRET"] = ALI_SECRET
        self.agent.env["HW_GW_SECRET"] = HW_SECRET


def _sub_secret(device: str) -> str:
    return f"sub-secret-of-{device}"
