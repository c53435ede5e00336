"""The outside tools some tests need (mosquitto, socat, openssl, systemd-analyze).

Each test or fixture that runs a tool asks for it here, so a test that needs
none (a decoder table) runs on any machine, and one that needs a missing tool
fails with what to install: an error, never a skip.
"""

from __future__ import annotations

import shutil

import pytest

INSTALL = {
    "mosquitto": "apt-get install mosquitto mosquitto-clients",
    "socat": "apt-get install socat",
    "openssl": "apt-get install openssl",
    "systemd-analyze": "apt-get install systemd",
    "fusermount3": "apt-get install fuse3",
}


def require(tool: str) -> str:
    """The path of ``tool``; the test fails (never skips) when it is not installed."""
    found = shutil.which(tool) or (shutil.which(tool, path="/usr/sbin:/sbin"))
    if found is None:
        how = INSTALL.get(tool, f"install {tool}")
        pytest.fail(f"{tool} is not installed: run scripts/setup.sh ({how})", pytrace=False)
    return found
