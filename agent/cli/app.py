"""The typer app of ``edge-agent``: every command's arguments and help.

The one console script is :mod:`agent.cli.main`, which answers ``run``,
``status`` and ``metrics`` without importing this module. Each command's work
lives in its own module (``cli/status.py``, ``cli/doctor.py``...).

Exit codes: 0 ok, 1 runtime failure, 2 bad input or configuration. Heavy
modules (pydantic models, drivers, paho) are imported inside the commands that
need them, so ``edge-agent status`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.cli.common import EXIT_RUNTIME, fail, load_site_or_exit
from agent.errors import AgentError

app = typer.Typer(
    name="edge-agent",
    help="Edge data-acquisition agent: polls shop-floor equipment, buffers, publishes to MQTT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Site file (YAML).")]


@app.command()
def validate(config: ConfigOpt) -> None:
    """Check a site file without touching any device. Exit 0 if valid, 2 otherwise."""
    from agent.cli.site import validate as validate_site

    validate_site(config)


@app.command()
def run(config: ConfigOpt) -> None:
    """Run the agent in the foreground (what systemd runs). SIGTERM flushes and exits 0."""
    site = load_site_or_exit(config, machines=True)
    from agent import logs
    from agent.runtime.process import run_agent

    logs.setup(site.agent.log_level, site.secrets)
    raise typer.Exit(run_agent(site))


@app.command()
def status(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Site file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    watch: Annotated[
        float | None, typer.Option("--watch", "-w", help="Refresh every SECONDS until Ctrl-C.")
    ] = None,
) -> None:
    """Show the running agent's state (devices, broker, buffer)."""
    from agent.cli import status as statusview

    if watch is not None:
        if watch <= 0 or as_json:
            fail("--watch takes a positive number of seconds and cannot be used with --json")
        raise typer.Exit(statusview.watch(config, watch))
    raise typer.Exit(statusview.show(config, as_json))


@app.command()
def metrics(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Site file.")] = None,
) -> None:
    """Print the running agent's metrics (Prometheus text format)."""
    from agent.cli import status as statusview

    raise typer.Exit(statusview.show_metrics(config))


@app.command()
def read(
    config: ConfigOpt,
    device: Annotated[str, typer.Argument(help="Device id from the site file.")],
    tags: Annotated[list[str] | None, typer.Argument(help="Tags to read (default: all).")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Also show raw registers, all orders.")
    ] = False,
) -> None:
    """One-shot read of a device's tags, for commissioning."""
    site = load_site_or_exit(config)
    from agent.cli.read import read_device

    try:
        dev = site.device(device)
    except KeyError:
        known = ", ".join(d.id for d in site.devices)
        fail(f"no device {device!r} in {config} (devices: {known})")
    unknown = [t for t in tags or [] if t not in dev.options.tags]
    if unknown:
        fail(f"device {device} has no tag {', '.join(map(repr, unknown))}")
    raise typer.Exit(read_device(dev, tags or list(dev.options.tags), raw))


@app.command()
def schema(
    kind: Annotated[str, typer.Argument(help="site or profile")] = "site",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file.")
    ] = None,
    markdown: Annotated[
        bool,
        typer.Option("--markdown", help="The site file reference page (docs/SITE-REFERENCE.md)."),
    ] = False,
) -> None:
    """Print the JSON schema of site files or profiles (for editors), or the reference page."""
    from agent.cli.site import show_reference, show_schema

    if markdown:
        show_reference(output)
    else:
        show_schema(kind, output)


@app.command()
def demo(
    broker: Annotated[
        str | None, typer.Option(help="Publish to this broker (HOST:PORT) instead of a local one.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop by itself after this many seconds.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the demo keeps its buffer.")] = None,
    dialect: Annotated[
        str,
        typer.Option(
            help="What the agent speaks: edge-json (its own JSON), sparkplug-b (an Edge Node of "
            "group demo) or thingsboard (a gateway). alink and iotda are not offered: their "
            "gateways sign in to the vendor's own cloud broker, which a local one cannot "
            "stand in for."
        ),
    ] = "edge-json",
    also: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DIALECT",
            help="One more destination on the same broker speaking DIALECT (its own client "
            "id); may be given twice.",
        ),
    ] = None,
    outage: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DEVICE=AT+FOR",
            help="A simulated Modbus machine stops answering AT seconds after the start, "
            "for FOR seconds (e.g. saw-motor-2=20+10); may be repeated.",
        ),
    ] = None,
) -> None:
    """A sample factory on this machine: simulators, a broker, the agent, live values.

    It prints the edge-agent listen command that shows each destination's messages.
    """
    import asyncio

    from agent import logs
    from agent.cli.demo import Outage, demo_dialects, run_demo

    logs.setup("warning")
    if broker is not None and not broker.rpartition(":")[2].isdigit():
        fail(f"--broker {broker!r}: expected HOST:PORT")
    try:
        dialects = demo_dialects(dialect, also or [])
        outages = [Outage.parse(text) for text in outage or []]
    except ValueError as exc:
        fail(str(exc))
    try:
        code = asyncio.run(run_demo(broker, duration, data_dir, dialects, outages))
    except (OSError, AgentError) as exc:
        fail(f"demo failed: {exc}", EXIT_RUNTIME)
    raise typer.Exit(code)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def simulate(ctx: typer.Context) -> None:
    """Run simulated equipment alone (see --help of python -m simulators).

    Example: edge-agent simulate --vfd 2 --meter 1 --base-port 5020
    """
    from agent.cli.demo import run_simulators

    raise typer.Exit(run_simulators(list(ctx.args)))


@app.command()
def doctor(
    config: ConfigOpt,
    seconds: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for each device and the broker.")
    ] = 3.0,
) -> None:
    """Check this box: site file, data dir, devices, broker, clock, file permissions.

    One PASS/WARN/FAIL line per check. Exit 0 if nothing FAILed, 1 otherwise, 2 bad config.
    """
    from agent.cli.doctor import run as run_doctor

    raise typer.Exit(run_doctor(config, seconds, typer.echo))


@app.command()
def listen(
    broker: Annotated[str, typer.Option("--broker", help="The broker, HOST:PORT.")],
    topics: Annotated[
        list[str] | None, typer.Argument(help="Topic filters (default: the dialect's topics).")
    ] = None,
    dialect: Annotated[
        str,
        typer.Option(
            help="edge-json, sparkplug-b, thingsboard, alink, iotda, or auto (guess by topic)."
        ),
    ] = "edge-json",
    username: Annotated[str | None, typer.Option(help="MQTT user name.")] = None,
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", metavar="VAR", help="Read the password from $VAR."),
    ] = None,
    tls: Annotated[bool, typer.Option("--tls", help="TLS, the system's CAs.")] = False,
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", metavar="FILE", help="TLS, this CA file.")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="Client id (default: edge-agent-listen-PID).")
    ] = None,
    seq_key: Annotated[
        str, typer.Option(help="The buffer-seq key of the cloud dialects.")
    ] = "edge_seq",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    count: Annotated[int | None, typer.Option(help="Stop after N messages.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop after S seconds (default: Ctrl-C).")
    ] = None,
) -> None:
    """Show what reaches a broker, decoded: check a destination without the cloud's console.

    One line per message, a WARNING line when a seq skips or repeats, a summary
    at the end. Exit 0; 1 if the broker cannot be reached; 2 bad input.
    """
    from agent.cli.listen import listen as run_listen

    raise typer.Exit(
        run_listen(
            broker=broker,
            topics=topics or [],
            dialect=dialect,
            username=username,
            password_env=password_env,
            tls=tls,
            tls_ca=tls_ca,
            client_id=client_id,
            seq_key=seq_key,
            as_json=as_json,
            count=count,
            timeout=timeout,
        )
    )


@app.command()
def report(
    config: ConfigOpt,
    shift: Annotated[
        str | None,
        typer.Option("--shift", help="DATE/NAME, e.g. 2026-12-07/day (default: the latest)."),
    ] = None,
    machine: Annotated[str | None, typer.Option("--machine", help="Only this machine.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What the box computed for a shift: states, pieces, OEE, energy per part."""
    from agent.cli.report import report as show

    show(config, shift, machine, as_json)


def _add_buffer_commands() -> None:
    from agent.cli.buffer import buffer_app  # typer only; the commands import lazily

    app.add_typer(buffer_app, name="buffer")


_add_buffer_commands()


def _add_library_commands() -> None:
    from agent.cli.initsite import init
    from agent.cli.profile import profile_app
    from agent.cli.site import config_app

    app.add_typer(profile_app, name="profile")
    app.add_typer(config_app, name="config")
    app.command()(init)


_add_library_commands()
