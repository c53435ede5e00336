"""The agent's own errors: one root, one branch per package that raises.

::

    AgentError                       anything the agent reports as its own failure
    ├── SiteError                    agent.site: the site file or a profile is unusable
    │   └── ConfigFileError          every problem, located as FILE:LINE: path: message
    ├── StorageError                 agent.buffer: the buffer file cannot be opened or used
    │   └── DiskFull                 the disk under it has no room: kept in RAM and retried
    ├── PublishError                 agent.north: a broker setting cannot work (bad CA, ...)
    ├── DialectError                 agent.north dialects: a reading or command they cannot carry
    ├── AlreadyRunning               agent.status: another agent serves this status socket
    ├── UnsafePath                   agent.private: a folder another account could redirect
    └── CommandError                 agent.cli: a command cannot do what it was asked
        ├── InitError                ``edge-agent init``: a bad --set path, the same agent id...
        └── DemoError                ``edge-agent demo``: no broker can be started

Device and tag failures are not here: they belong to the drivers
(:mod:`drivers.base`: ``ConfigError``, ``DeviceUnavailable``, ``PointError``)
and never end the agent. ``RuntimeError`` stays what Python means by it, a
programming error (a method called twice), never a domain signal.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises as its own."""


class SiteError(AgentError):
    """The site file, or a profile it uses, cannot be used as it is."""


class StorageError(AgentError):
    """The buffer file cannot be opened, read or written (not: a full cap, which is counted)."""


class DiskFull(StorageError):
    """The disk under the buffer has no room: the batches wait in RAM and the write is retried."""


class PublishError(AgentError):
    """A broker setting that cannot work, said in a plain sentence (the CA file is missing...)."""


class DialectError(AgentError, ValueError):
    """A north dialect cannot carry this reading or command (a tag never born, a bad width...)."""


class AlreadyRunning(AgentError):
    """Another live agent already answers on this status socket."""


class UnsafePath(AgentError):
    """A folder or file the agent writes into is another account's, or writable by others."""


class CommandError(AgentError):
    """A command-line tool cannot carry out what it was asked."""


class InitError(CommandError, ValueError):
    """``edge-agent init`` cannot carry out the request (bad --set path, same agent id...)."""


class DemoError(CommandError):
    """The demo cannot start what it needs (no broker binary, no amqtt)."""
