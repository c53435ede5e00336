"""A PackML packaging line served over OPC UA, with fault injection.

The address space (namespace ``urn:edge-agent:sim:packaging``, registered
first so its index is 2)::

    Objects/Line1                      ns=2;s=Line1
      StateCurrent        Int32        PackML state number (2 Stopped, 6 Execute, 9 Aborted...)
      ModeCurrent         Int32        1 Production, 2 Maintenance, 3 Manual
      ProdProcessedCount  Int32        packs made (PackTags AccCount: INT32, wraps to negative)
      ProdDefectiveCount  Int32        packs rejected, same type
      CurSpeed            Double       packs/min, actual
      MachSpeed           Double       packs/min, set point (writable)
      RecipeName          String
      AlarmActive         Boolean
      AlarmCode           Int32        0 when no alarm

Each variable's NodeId is ``ns=2;s=Line1.<Name>``. A value is written only
when it changes, with the change time as its source timestamp, as a PLC does.

Clients connect through a :class:`FaultProxy`, so ``slow``, ``freeze`` and
``garbage`` act on the link; ``restart`` stops and starts the server (and the
listening port) with the line's state kept. Run standalone with
``python -m simulators.packaging_line --port 4840``.

With a :class:`ServerSecurity` the server offers only Basic256Sha256 Sign and
SignAndEncrypt endpoints (no None endpoint), checks each client certificate
(validity, ApplicationUri in its subjectAltName, key usage, clientAuth) and,
given a trusted folder, refuses certificates that are not in it, as a PLC's
OPC UA server does with its trust list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager

from simulators.fault_proxy import FaultProxy
from simulators.packml import LineConfig, Mode, PackagingLine, State
from simulators.timeline import Scripted, Timeline, TimelineError, wrap

_log = logging.getLogger(__name__)

NAMESPACE = "urn:edge-agent:sim:packaging"
PATH = "/edge-agent/packaging-line"
SERVER_URI = "urn:edge-agent:sim:packaging-line"
"""The server's ApplicationUri when secured: its certificate must carry it as a URI SAN."""

_POLICIES = {
    "Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}

VT = ua.VariantType
# name -> (OPC UA type, how to read it off the model)
VARIABLES: dict[str, tuple[ua.VariantType, Callable[[PackagingLine], Any]]] = {
    "StateCurrent": (VT.Int32, lambda line: int(line.state)),
    "ModeCurrent": (VT.Int32, lambda line: int(line.mode)),
    "ProdProcessedCount": (VT.Int32, lambda line: wrap(line.processed, "int32")),
    "ProdDefectiveCount": (VT.Int32, lambda line: wrap(line.defective, "int32")),
    "CurSpeed": (VT.Double, lambda line: round(line.cur_speed, 3)),
    "MachSpeed": (VT.Double, lambda line: float(line.mach_speed)),
    "RecipeName": (VT.String, lambda line: line.recipe),
    "AlarmActive": (VT.Boolean, lambda line: line.alarm_active),
    "AlarmCode": (VT.Int32, lambda line: line.alarm_code),
}


def node_id(name: str) -> str:
    """The NodeId string of a Line1 variable, e.g. ``ns=2;s=Line1.CurSpeed``."""
    return f"ns=2;s=Line1.{name}"


@dataclass(frozen=True)
class ServerSecurity:
    """Serve over Basic256Sha256 only, with this certificate and key.

    ``certificate`` (PEM or DER, by file suffix) must carry :data:`SERVER_URI`
    as a URI subjectAltName; ``private_key`` is PEM or DER, unencrypted.
    ``trusted`` is a folder of trusted client certificates (or their CAs),
    ``.der``/``.pem``; None accepts any well-formed client certificate.
    """

    certificate: Path
    private_key: Path
    trusted: Path | None = None
    modes: tuple[Literal["Sign", "SignAndEncrypt"], ...] = ("Sign", "SignAndEncrypt")


@dataclass
class LineHandle:
    """A running simulator: where to connect, and the knobs tests turn."""

    line: PackagingLine
    proxy: FaultProxy
    server: Server | None = None
    backend_port: int = 0
    users: dict[str, str] | None = None
    anonymous: bool = True
    security: ServerSecurity | None = None
    timeline: Timeline | None = None
    """The script the line follows instead of its random behaviour (see :meth:`tick`)."""
    _offline: bool = False
    _nodes: dict[str, Node] = field(default_factory=dict)
    _published: dict[str, Any] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def endpoint(self) -> str:
        """The URL clients use (the fault proxy's port)."""
        return f"opc.tcp://127.0.0.1:{self.proxy.port}{PATH}"

    def set_fault(self, kind: str | None, *, delay: float = 0.0, seconds: float = 0.0) -> None:
        """``slow`` (delay s per answer), ``freeze`` (for seconds; 0 = until cleared),
        ``garbage`` (next answer is random bytes), or None to clear."""
        self.proxy.set(kind, delay=delay, seconds=seconds)

    async def restart(self, down_for: float = 0.0) -> None:
        """Stop the server and its port, wait ``down_for`` s, start again on the same port."""
        async with self._lock:
            await self.proxy.stop()
            await self._stop_server()
            await asyncio.sleep(down_for)
            await self._start_server()
            await self.proxy.start(self.proxy.port)

    async def advance(self, seconds: float, dt: float = 0.1) -> None:
        """Run the line for ``seconds`` of simulated time now, publishing as it goes."""
        steps = max(1, round(seconds / dt))
        for _ in range(steps):
            await self.tick(dt)

    async def tick(self, dt: float) -> None:
        """One model step, then publish the values that changed."""
        async with self._lock:
            if self.server is None:
                return
            speed = await self._nodes["MachSpeed"].read_value()
            if isinstance(speed, float | int) and speed >= 0:
                self.line.mach_speed = float(speed)
            if self.timeline is None:
                self.line.step(dt)
            else:
                self._follow(self.timeline.advance())
            await self._publish()

    def _follow(self, state: Scripted) -> None:
        """Set the line as the script says: state, mode, counters, alarm, link."""
        line = self.line
        line.state = State(state.packml_state)
        if state.mode is not None:
            line.mode = Mode(state.mode)
        line.processed, line.defective = state.pieces, state.rejects
        line.alarm_active, line.alarm_code = state.fault != 0, state.fault
        line.cur_speed = line.mach_speed if state.running else 0.0
        if state.offline != self._offline:
            self._offline = state.offline
            self.proxy.set("freeze" if state.offline else None)

    async def value(self, name: str) -> Any:
        """A variable's current value, read inside the server (for tests)."""
        return await self._nodes[name].read_value()

    async def data_value(self, name: str) -> ua.DataValue:
        """A variable's DataValue with its timestamps, read inside the server."""
        return await self._nodes[name].read_data_value()

    async def write(self, name: str, value: Any) -> None:
        """Force a variable (as if the PLC changed it), timestamped now."""
        async with self._lock:
            await self._write(name, value, datetime.now(UTC))

    async def write_stamped(
        self, name: str, value: Any, source: datetime | None, server: datetime | None
    ) -> None:
        """Force a variable with the given timestamps (a PLC with a bad clock, MinValue...)."""
        async with self._lock:
            vtype = VARIABLES[name][0]
            dv = ua.DataValue(
                ua.Variant(value, vtype),
                SourceTimestamp=cast(ua.DateTime, source),
                ServerTimestamp=cast(ua.DateTime, server),
            )
            await self._nodes[name].write_value(dv)
            self._published[name] = value

    async def _publish(self) -> None:
        now = datetime.now(UTC)
        for name, (_, getter) in VARIABLES.items():
            value = getter(self.line)
            if self._published.get(name) != value:
                await self._write(name, value, now)

    async def _write(self, name: str, value: Any, stamp: datetime) -> None:
        vtype = VARIABLES[name][0]
        when = cast(ua.DateTime, stamp)  # ua.DateTime is a typing marker for datetime
        dv = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=when, ServerTimestamp=when)
        await self._nodes[name].write_value(dv)
        self._published[name] = value

    async def _start_server(self) -> None:
        users = None
        if self.users or self.security:
            secured = self.security is not None
            users = cast(UserManager, _Users(self.users, self.anonymous, secured))
        server = Server(user_manager=users)
        await server.init()
        # The clock task only updates ServerStatus.CurrentTime, and it makes
        # stop() wait up to a second: a restart test pays for it every time.
        server.disable_clock()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.backend_port}{PATH}")
        server.set_server_name("edge-agent packaging line simulator")
        if self.security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await _secure(server, self.security)
        if self.users:
            tokens: list[type] = [ua.UserNameIdentityToken]
            if self.anonymous:
                tokens.append(ua.AnonymousIdentityToken)
            server.set_identity_tokens(tokens)
        idx = await server.register_namespace(NAMESPACE)
        line1 = await server.nodes.objects.add_object(
            ua.NodeId(ua.String("Line1"), ua.Int16(idx)), ua.QualifiedName("Line1", idx)
        )
        self._published.clear()
        for name, (vtype, getter) in VARIABLES.items():
            var = await line1.add_variable(
                ua.NodeId(ua.String(f"Line1.{name}"), ua.Int16(idx)),
                ua.QualifiedName(name, idx),
                ua.Variant(getter(self.line), vtype),
            )
            self._nodes[name] = var
            self._published[name] = getter(self.line)
        await self._nodes["MachSpeed"].set_writable()
        await server.start()
        assert server.bserver is not None
        self.backend_port = server.bserver.port
        self.server = server

    async def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()


@contextlib.asynccontextmanager
async def run_packaging_line(
    port: int = 0,
    seed: int = 0,
    tick: float | None = 0.2,
    config: LineConfig | None = None,
    users: dict[str, str] | None = None,
    anonymous: bool = True,
    security: ServerSecurity | None = None,
    timeline: Timeline | None = None,
) -> AsyncIterator[LineHandle]:
    """Serve a packaging line on 127.0.0.1:``port`` (0 = free port) until the block ends.

    ``tick`` is the model step in seconds of wall time; None stops the line's
    own clock, and the caller moves it with :meth:`LineHandle.advance`.
    ``users`` ({name: password}) checks passwords; ``anonymous`` False then
    refuses clients without a user name. ``security`` serves signed or
    encrypted channels only (see :class:`ServerSecurity`). ``timeline`` scripts the
    line (:mod:`simulators.timeline`): ``run`` is Execute/Stopped, a ``fault`` Aborted
    with that AlarmCode, ``state``/``mode`` set StateCurrent/ModeCurrent, the piece and
    reject counters are ProdProcessedCount/ProdDefectiveCount, ``offline`` freezes the
    link (connections kept, nothing answered). The script is applied every ``tick``.
    """
    line = PackagingLine(seed=seed, config=config or LineConfig())
    if timeline is not None:
        _check_packml(timeline)
    handle = LineHandle(
        line=line,
        proxy=FaultProxy("127.0.0.1", 0),
        users=users,
        anonymous=anonymous,
        security=security,
        timeline=timeline,
    )
    if timeline is not None:
        handle._follow(timeline.advance())
    await handle._start_server()
    handle.proxy.target = ("127.0.0.1", handle.backend_port)
    await handle.proxy.start(port)
    runner = asyncio.create_task(_run(handle, tick), name="packaging-line-clock")
    try:
        yield handle
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await handle.proxy.stop()
        await handle._stop_server()


def _check_packml(timeline: Timeline) -> None:
    """Refuse states and modes the line cannot show."""
    for index, step in enumerate(timeline.steps):
        if step.state is not None and step.state not in State._value2member_map_:
            raise TimelineError(f"timeline step {index}: {step.state} is not a PackML state")
        if step.mode is not None and step.mode not in Mode._value2member_map_:
            raise TimelineError(f"timeline step {index}: {step.mode} is not a unit mode (1-3)")
        if step.counter is not None and step.counter > 2**32 - 1:
            raise TimelineError(f"timeline step {index}: counter {step.counter} exceeds 32 bits")


async def _secure(server: Server, security: ServerSecurity) -> None:
    """Basic256Sha256 endpoints only, and a check of every client certificate."""
    await server.set_application_uri(SERVER_URI)
    await server.load_certificate(security.certificate)
    await server.load_private_key(security.private_key)
    server.set_security_policy([_POLICIES[mode] for mode in security.modes])
    options = CertificateValidatorOptions.EXT_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
    store = None
    if security.trusted is not None:
        options |= CertificateValidatorOptions.TRUSTED
        store = TrustStore([security.trusted], [])
        await store.load()
    server.set_certificate_validator(CertificateValidator(options, store))


class _Users:
    """Who may open a session (asyncua's UserManager protocol).

    ``users`` None accepts any user name. ``secured`` refuses sessions on a
    channel without a client certificate: asyncua keeps an unsecured channel
    open for discovery (GetEndpoints) and would otherwise serve sessions on it
    even though no None endpoint is listed, which a secured PLC does not.
    """

    def __init__(self, users: dict[str, str] | None, anonymous: bool, secured: bool) -> None:
        self._users = users
        self._anonymous = anonymous
        self._secured = secured

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        # For user name and anonymous logins asyncua passes the channel's peer
        # certificate (DER): empty on an unsecured channel.
        if self._secured and not certificate:
            return None
        if username is None:
            return User(role=UserRole.User) if self._anonymous else None
        if self._users is None or self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


async def _run(handle: LineHandle, tick: float | None) -> None:
    if tick is None:
        return
    while True:
        await asyncio.sleep(tick)
        try:
            await handle.tick(tick)
        except Exception:  # a bad tick must not stop the line's clock
            _log.exception("packaging line tick failed")


def main() -> None:
    """``python -m simulators.packaging_line --port 4840 --seed 1``"""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=4840)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--certificate", type=Path, help="server certificate: serve secured only")
    parser.add_argument("--private-key", type=Path, help="server private key, with --certificate")
    parser.add_argument("--trusted", type=Path, help="folder of trusted client certificates")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    security = None
    if args.certificate or args.private_key:
        if not (args.certificate and args.private_key):
            parser.error("--certificate and --private-key go together")
        security = ServerSecurity(args.certificate, args.private_key, args.trusted)

    async def serve() -> None:
        line = run_packaging_line(port=args.port, seed=args.seed, security=security)
        async with line as handle:
            _log.info("packaging line at %s", handle.endpoint)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
