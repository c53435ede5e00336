"""The ``edge-agent`` command.

Exit codes: 0 ok, 1 runtime failure, 2 bad input or configuration. Heavy
modules (pydantic models, drivers, paho) are imported inside the commands that
need them, so ``edge-agent status`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from agent.resolve import Site

app = typer.Typer(
    name="edge-agent",
    help="Edge data-acquisition agent: polls shop-floor equipment, buffers, publishes to MQTT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Site file (YAML).")]
EXIT_RUNTIME = 1
EXIT_INPUT = 2


def main() -> None:
    """Console-script entry point."""
    app()


def _fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    typer.echo(f"edge-agent: {message}", err=True)
    raise typer.Exit(code)


def load_site_or_exit(config: Path) -> Site:
    """Load a site file; print every problem and exit 2 if it is invalid."""
    from agent.resolve import load_site
    from agent.yamlsrc import ConfigFileError

    try:
        return load_site(config)
    except ConfigFileError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        n = len(exc.problems)
        typer.echo(f"{config}: {n} problem{'s' if n != 1 else ''}, nothing was started", err=True)
        raise typer.Exit(EXIT_INPUT) from None


@app.command()
def validate(config: ConfigOpt) -> None:
    """Check a site file without touching any device. Exit 0 if valid, 2 otherwise."""
    print_summary(config, load_site_or_exit(config))


def print_summary(config: Path, site: Site) -> None:
    """What ``validate`` prints for a valid site: devices, profiles, overrides, lines."""
    n_tags = sum(len(d.options.tags) for d in site.devices)
    typer.echo(
        f"{config}: valid: agent {site.agent.id}, {len(site.devices)} devices, "
        f"{n_tags} tags, broker {site.mqtt.host}:{site.mqtt.port}"
    )
    for device in site.devices:
        profile = f"{device.profile}@{device.profile_hash}" if device.profile else "(no profile)"
        state = "" if device.enabled else " (disabled)"
        typer.echo(
            f"  {device.id}: {device.kind}, {profile}, {len(device.options.tags)} tags{state}"
        )
        for change in device.changes:
            typer.echo(f"    override: {change}")
    for use in site.links:
        typer.echo(
            f"  serial line {use.link}: {use.baud} baud, {use.utilisation:.0%} used by "
            f"{', '.join(use.devices)}"
        )
    from agent.permissions import readable_by_others

    for warning in [*site.warnings, *readable_by_others(site)]:
        typer.echo(f"warning: {warning}", err=True)


@app.command()
def run(config: ConfigOpt) -> None:
    """Run the agent in the foreground (what systemd runs). SIGTERM flushes and exits 0."""
    site = load_site_or_exit(config)
    from agent import logs
    from agent.service import run_agent

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
    from agent import statusview

    if watch is not None:
        if watch <= 0 or as_json:
            _fail("--watch takes a positive number of seconds and cannot be used with --json")
        raise typer.Exit(statusview.watch(config, watch))
    raise typer.Exit(statusview.show(config, as_json))


@app.command()
def metrics(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Site file.")] = None,
) -> None:
    """Print the running agent's metrics (Prometheus text format)."""
    from agent import statusview

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
    from agent.oneshot import read_device

    try:
        dev = site.device(device)
    except KeyError:
        known = ", ".join(d.id for d in site.devices)
        _fail(f"no device {device!r} in {config} (devices: {known})")
    unknown = [t for t in tags or [] if t not in dev.options.tags]
    if unknown:
        _fail(f"device {device} has no tag {', '.join(map(repr, unknown))}")
    raise typer.Exit(read_device(dev, tags or list(dev.options.tags), raw))


@app.command()
def schema(
    kind: Annotated[str, typer.Argument(help="site or profile")] = "site",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file.")
    ] = None,
) -> None:
    """Print the JSON schema of site files or profiles (for editors)."""
    import json

    from agent.schema import schemas

    documents = schemas()
    if kind not in documents:
        _fail(f"unknown schema {kind!r}: use site or profile")
    text = json.dumps(documents[kind], indent=2, sort_keys=True) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@app.command()
def demo(
    broker: Annotated[
        str | None, typer.Option(help="Publish to this broker (HOST:PORT) instead of a local one.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop by itself after this many seconds.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the demo keeps its buffer.")] = None,
) -> None:
    """A sample factory on this machine: simulators, a broker, the agent, live values."""
    import asyncio

    from agent import logs
    from agent.demo import run_demo

    logs.setup("warning")
    if broker is not None and not broker.rpartition(":")[2].isdigit():
        _fail(f"--broker {broker!r}: expected HOST:PORT")
    try:
        code = asyncio.run(run_demo(broker, duration, data_dir))
    except (OSError, RuntimeError) as exc:
        _fail(f"demo failed: {exc}", EXIT_RUNTIME)
    raise typer.Exit(code)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def simulate(ctx: typer.Context) -> None:
    """Run simulated equipment alone (see --help of python -m simulators).

    Example: edge-agent simulate --vfd 2 --meter 1 --base-port 5020
    """
    from simulators.__main__ import main as simulators_main

    raise typer.Exit(simulators_main(list(ctx.args)))


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
    from agent.doctor import run as run_doctor

    raise typer.Exit(run_doctor(config, seconds, typer.echo))


def _add_buffer_commands() -> None:
    from agent.buffercmd import buffer_app  # typer only; the commands import lazily

    app.add_typer(buffer_app, name="buffer")


_add_buffer_commands()


def _add_library_commands() -> None:
    from agent.librarycmd import config_app, init, profile_app  # typer only; lazy inside

    app.add_typer(profile_app, name="profile")
    app.add_typer(config_app, name="config")
    app.command()(init)


_add_library_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
