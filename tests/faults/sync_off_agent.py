"""``python -m tests.faults.sync_off_agent run -c site.yaml``: the agent with ``synchronous=OFF``.

Only for F16: the agent's config accepts ``FULL`` and ``NORMAL`` alone, and
the power-loss test must show that its detector fails a buffer that never
syncs. Both places that set the PRAGMA are wrapped: the open
(``schema._prepare``) and each commit (``Store.commit``, which switches a
delete-only commit to NORMAL and back to the configured mode). The site keeps
``synchronous: FULL``, so the run marker says FULL and the next start trusts
the file: what OFF lost shows as missing seqs, as it would on a box.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Any

from agent.buffer import schema, store
from agent.cli.main import main

_prepare = schema._prepare
_commit = store.Store.commit


def _prepare_off(conn: sqlite3.Connection, *args: Any, **kwargs: Any) -> None:
    _prepare(conn, *args, **kwargs)
    conn.execute("PRAGMA synchronous=OFF")
    level = conn.execute("PRAGMA synchronous").fetchone()[0]
    print(f"sync_off_agent: PRAGMA synchronous is {level}", file=sys.stderr, flush=True)


def _commit_off(self: store.Store, *args: Any, **kwargs: Any) -> int:
    self.conn.execute("PRAGMA synchronous=OFF")
    try:
        return _commit(self, *args, **kwargs)
    finally:
        self.conn.execute("PRAGMA synchronous=OFF")


schema._prepare = _prepare_off  # looked up by name in schema._open at each open
store.Store.commit = _commit_off  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
