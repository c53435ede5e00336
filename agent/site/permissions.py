"""Warn when the site file or a file holding a secret can be read by every user.

The site file may hold a password (or name where one is), ``mqtt.password_file``
holds one (so do a destination's password, token and device secret files), the
TLS key is the box's identity toward the broker, and a
driver's client key (OPC UA ``private_key``) its identity toward a device. Any of
them readable by others lets every local account read it. ``edge-agent run``
logs one warning per such file at start-up and ``edge-agent validate`` prints
them; neither refuses to run (``edge-agent doctor`` checks more).
"""

from __future__ import annotations

import stat
from pathlib import Path

from agent.site.loader import Site
from agent.site.north import secret_files
from drivers.base import NamesSecretFiles


def sensitive_files(site: Site) -> list[tuple[Path, str]]:
    """The files to keep from other users, each with what it holds."""
    base = site.file.resolve().parent
    files = [(site.file, "the site file")]
    if site.mqtt.password_file is not None:
        files.append((site.mqtt.password_file, "the MQTT password"))
    if site.mqtt.tls is not None and site.mqtt.tls.key is not None:
        files.append((site.mqtt.tls.key, "the TLS client key"))
    for dest in site.north:
        files.extend(secret_files(dest))
    files = [(p if p.is_absolute() else base / p, what) for p, what in files]
    for device in site.devices:  # paths as the driver reads them
        if isinstance(device.options, NamesSecretFiles):
            files.extend(
                (path, f"{what} of device {device.id}")
                for what, path in device.options.secret_files().items()
            )
    return files


def readable_by_others(site: Site) -> list[str]:
    """One warning per sensitive file whose mode lets every user read it."""
    warnings = []
    for path, what in sensitive_files(site):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # a missing file is a config error, reported elsewhere
        if mode & stat.S_IROTH:
            warnings.append(
                f"{path} ({what}) is readable by every user (mode {stat.filemode(mode)}): "
                f"chmod 640 {path}"
            )
    return warnings
