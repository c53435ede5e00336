"""edge-agent: devices -> readings -> SQLite buffer -> MQTT, on a shop-floor edge box.

=========  =================================================================
package    the question it answers
=========  =================================================================
site       was the site file accepted, and what does the agent make of it?
buffer     what is on disk, waiting to be sent?
north      why did (or didn't) this publish?
compute    where does a derived or filtered value come from?
runtime    what runs, in what order, and how is it stopped?
status     what does the running agent say about itself?
cli        what does ``edge-agent X`` do and print?
=========  =================================================================

Modules of their own: ``errors`` (the error tree), ``message`` (the wire
format and what it can carry), ``clock`` (whether the wall clock can be trusted
for ``ts``), ``formula`` (the language of derived tags, compiled when the site
is loaded), ``paths`` (every default location), ``logs`` and ``secretmask``.
The version comes from the package metadata (pyproject).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Looked up on first use: importlib.metadata costs milliseconds that the
    # status command should not pay when it does not print the version.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("edge-agent")
        except PackageNotFoundError:  # a checkout that was never pip-installed
            return "0+unknown"
    raise AttributeError(name)
