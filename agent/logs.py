"""Logging set-up: plain lines on a terminal, syslog priorities under systemd.

Under systemd (``JOURNAL_STREAM`` set) journald adds its own timestamps, so
lines carry none of ours; each line starts with ``<N>`` (the syslog priority)
so ``journalctl -p warning`` works.
"""

from __future__ import annotations

import logging
import os
import sys

from agent.secretmask import MIN_LENGTH, mask

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


class _Redact(logging.Filter):
    """Last line of defence: secrets never reach a log line, nor a traceback under one."""

    def __init__(self, secrets: frozenset[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= MIN_LENGTH]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = mask(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # the formatter uses exc_text when set: render the traceback here, masked
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = mask(record.stack_info, self.secrets)
        return True


def add_secrets(secrets: frozenset[str]) -> None:
    """Mask more values from now on (a reloaded site file may bring a new password)."""
    for handler in logging.getLogger().handlers:
        for found in handler.filters:
            if isinstance(found, _Redact):
                found.secrets = sorted(
                    {*found.secrets, *(s for s in secrets if len(s) >= MIN_LENGTH)}
                )


def under_systemd() -> bool:
    """True when stderr goes to the journal."""
    return "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ


def setup(level: str = "info", secrets: frozenset[str] = frozenset()) -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler(sys.stderr)
    if under_systemd():
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(_Redact(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    """Log at ``level`` from now on (at start, and on a reload that changes it)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    # Protocol libraries log every retry at warning; their errors reach us as exceptions.
    for noisy in ("pymodbus", "asyncua", "paho"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, root.level))
