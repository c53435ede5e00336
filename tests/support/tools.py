"""The outside tools some tests need (mosquitto, socat, openssl, node...).

Each test or fixture that runs a tool asks for it here, so a test that needs
none (a decoder table) runs on any machine, and one that needs a missing tool
fails with what to install: an error, never a skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

INSTALL = {
    "mosquitto": "apt-get install mosquitto mosquitto-clients",
    "socat": "apt-get install socat",
    "openssl": "apt-get install openssl",
    "systemd-analyze": "apt-get install systemd",
    "fusermount3": "apt-get install fuse3",
    "libfaketimeMT.so.1": "apt-get install faketime",
    "node": "apt-get install nodejs npm",
    "npm": "apt-get install nodejs npm",
}
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime",
                "/usr/lib/faketime", "/usr/local/lib/faketime")  # fmt: skip
"""Where Debian (amd64, arm64) and a source install put libfaketime."""


def require(tool: str) -> str:
    """The path of ``tool``; the test fails (never skips) when it is not installed."""
    found = shutil.which(tool) or (shutil.which(tool, path="/usr/sbin:/sbin"))
    if found is None:
        how = INSTALL.get(tool, f"install {tool}")
        pytest.fail(f"{tool} is not installed: run scripts/setup.sh ({how})", pytrace=False)
    return found


def require_library(name: str) -> str:
    """The path of a preload library such as ``libfaketimeMT.so.1``; fails when missing."""
    for folder in LIBRARY_DIRS:
        if (Path(folder) / name).is_file():
            return str(Path(folder) / name)
    how = INSTALL.get(name, f"install {name}")
    pytest.fail(f"{name} is not installed: run scripts/setup.sh ({how})", pytrace=False)
