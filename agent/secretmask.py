"""Which configuration values are secrets, and masking them in what people read.

A secret is any value under a key named ``password``, ``secret`` or ``token``
(or ending so: ``api_token``), literal or from ``${ENV}``, wherever it is in a
site file, plus the content of ``mqtt.password_file``. Log lines are masked by
the filter in :mod:`agent.logs`; configuration problems here, because a
validation message quotes the offending input (:func:`agent.site.loader.mask_problems`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

MASK: Final = "***"
MIN_LENGTH: Final = 3
"""Shorter secrets are not masked: replacing every "a" would garble each message."""

_SECRET_KEYS: Final = ("password", "secret", "token")


def is_secret_key(key: object) -> bool:
    """True for a key whose value is a secret: ``password``, ``api_token``, ``secret``...

    Not ``password_file``: a path to a secret is no secret, and a warning about
    the file's permissions must be able to name it.
    """
    return isinstance(key, str) and key.lower().endswith(_SECRET_KEYS)


def secret_values(node: Any, secret: bool = False) -> set[str]:
    """Every scalar under a secret key in parsed YAML (an int password counts too)."""
    if isinstance(node, dict):
        return {v for k, child in node.items() for v in secret_values(child, is_secret_key(k))}
    if isinstance(node, list):
        return {v for child in node for v in secret_values(child, secret)}
    if secret and node is not None and not isinstance(node, bool) and str(node):
        return {str(node)}
    return set()


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (also as spelled inside a ``repr``) replaced by ``***``."""
    for secret in sorted((s for s in secrets if len(s) >= MIN_LENGTH), key=len, reverse=True):
        # repr() of an input escapes quotes and backslashes: mask that spelling too
        for spelling in (secret, repr(secret)[1:-1]):
            text = text.replace(spelling, MASK)
    return text
