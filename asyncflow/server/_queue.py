"""The background queue (`task.delay()`), read-only: queued, running and finished delayed runs, and
which worker holds which lease. The embedded broker keeps its queue in a table of a SQLite file (the
store's, unless ASYNCFLOW_BROKER_URL names another); the server reads it on a read-only connection
of its own and never writes it. A Redis broker's queue is not shown (yet)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

LIMIT = 100  # rows per section


def broker_path() -> tuple[Path | None, str]:
    """The SQLite file of the queue, or None and why not."""
    from .. import _settings
    from .._store.sqlite import DB_FILE_NAME

    url = _settings.BROKER_URL.value() or None
    if url is None:
        return _settings.HOME.value() / DB_FILE_NAME, "the store's file"
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):]), url
    return None, f"ASYNCFLOW_BROKER_URL={url.split('@')[-1]!r} (only the SQLite broker's queue is shown here)"


_COLUMNS = ("id", "task_name", "state_name", "state_type", "message", "lease_owner", "lease_expires", "attempts",
            "created", "finished")


def read_queue(path: Path | None = None, limit: int = LIMIT) -> dict[str, Any]:
    where = "the store's file"
    if path is None:
        path, where = broker_path()
    out: dict[str, Any] = {"broker": where, "path": str(path) if path else None, "available": False,
                           "counts": {"queued": 0, "running": 0, "finished": 0}, "queued": [], "running": [],
                           "finished": [], "workers": []}
    if path is None or not path.is_file():
        return out
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1.0, isolation_level=None)
    except sqlite3.Error:
        return out
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'asyncflow_task_queue'"
                          ).fetchone():
            out["available"] = True  # no delayed run yet
            return out
        now = time.time()
        columns = ", ".join(_COLUMNS)
        held = "lease_owner IS NOT NULL AND lease_expires >= ?"

        def rows(sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
            return [dict(zip(_COLUMNS, row, strict=True)) for row in db.execute(sql, params).fetchall()]

        out["queued"] = rows(f"SELECT {columns} FROM asyncflow_task_queue WHERE finished IS NULL AND NOT "
                             f"({held}) ORDER BY created LIMIT ?", (now, limit))
        out["running"] = rows(f"SELECT {columns} FROM asyncflow_task_queue WHERE finished IS NULL AND {held} "
                              f"ORDER BY created LIMIT ?", (now, limit))
        out["finished"] = rows(f"SELECT {columns} FROM asyncflow_task_queue WHERE finished IS NOT NULL "
                               f"ORDER BY finished DESC LIMIT ?", (limit,))
        queued, running, finished = db.execute(
            f"SELECT sum(finished IS NULL AND NOT ({held})), sum(finished IS NULL AND {held}), "
            f"sum(finished IS NOT NULL) FROM asyncflow_task_queue", (now, now)).fetchone()
        out["counts"] = {"queued": queued or 0, "running": running or 0, "finished": finished or 0}
        out["workers"] = [{"worker": owner, "runs": count, "lease_expires": expires} for owner, count, expires in
                          db.execute(f"SELECT lease_owner, count(*), max(lease_expires) FROM asyncflow_task_queue "
                                     f"WHERE finished IS NULL AND {held} GROUP BY 1 ORDER BY 1", (now,))]
        out["available"] = True
    except sqlite3.Error as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        db.close()
    return out
