"""The Sparkplug tests' decoder type; the ``tahu_decode`` fixture is in ``tests/conftest.py``.

``Decode`` is kept here for the modules that import it from this place; new
code imports it from :mod:`tests.support.tahu`.
"""

from __future__ import annotations

from tests.support.tahu import Decode

__all__ = ["Decode"]
