"""Tag-based task concurrency limits: the engine's hook.

A task run whose tags include a limited tag (a limit named `tag:<tag>`, created with `asyncflow
concurrency-limit create TAG N`) takes one slot of each such limit before each attempt runs its
function and gives it back when the attempt ends. While it waits, its state is `Pending` named
`AwaitingConcurrencySlot` (recorded in the store, so the CLI and the UI show it).

Free when no tag limit exists: a run without tags never gets here, and a run with tags looks them up
in this process's cached set of tag limits (refreshed from the store at most every `REFRESH_SECONDS`,
and at once when this process changes a limit)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._store import get_store
from . import sql
from .acquire import Lease, Request, acquire
from .db import LimitsDB, for_store

REFRESH_SECONDS = 1.0
TASK_LEASE_SECONDS = 300.0
WAITING_STATE = "AwaitingConcurrencySlot"
_known: dict[LimitsDB, tuple[float, frozenset[str]]] = {}  # db -> (read at, monotonic; its active tag limits)
_last: tuple[Any, LimitsDB | None] = (None, None)  # the process's store and its limit tables, last time


def forget(db: LimitsDB) -> None:
    _known.pop(db, None)


def limited(tags: tuple[str, ...]) -> tuple[LimitsDB | None, list[str]]:
    """The tag limits (their names) that apply to a run with these tags, and where they are."""
    global _last
    store = get_store()
    if store is _last[0]:
        db = _last[1]
    else:
        db = for_store(store)
        _last = (store, db)
    if db is None:
        return None, []
    now = time.monotonic()
    known = _known.get(db)
    if known is None or now - known[0] > REFRESH_SECONDS:
        try:
            names = db.run(sql.active_tag_limits, wait=1.0)
        except Exception:  # the store cannot be read now: do not stop the run for it
            names = known[1] if known is not None else frozenset()
        known = _known[db] = (now, names)
    if not known[1]:
        return db, []
    return db, [name for name in (sql.TAG_PREFIX + tag for tag in tags) if name in known[1]]


async def acquire_for_task(run: Any, bridge: Any, on_wait: Callable[[str], None]) -> Lease | None:
    """Take a slot of every tag limit of `run` (None if it has none); `on_wait(message)` once it waits."""
    _, names = limited(run.tags)
    if not names:
        return None
    request = Request(names, 1, "concurrency", None, None, TASK_LEASE_SECONDS, False, f"task_run:{run.id}")
    return await acquire(request, bridge, on_wait, quiet=True)
