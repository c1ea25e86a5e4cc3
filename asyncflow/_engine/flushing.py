"""Group commit of root runs' records: when a root flow run ends, everything it recorded is in the store
before its caller gets the result. On an event loop that wait is a hop to a worker thread, which writes
the queued records itself (`store.flush()`); with many flows ending at once (2,000 concurrent flows in a
web service) one hop per flow queued them all behind anyio's 40 worker threads.

So the flows that end on one loop share flushes: a flush covers every record queued before it started,
and a run that ends while one is in flight waits for it and then for the next one (which starts after
its records were queued), started by whichever waiter gets there first. One flush per round, however
many runs end meanwhile; no run gets its result before its own records are written.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio

from .. import _fork
from .._store import flush as flush_store


class _Group:
    """The flushes of the loop running in one thread (only that thread touches it)."""

    __slots__ = ("done", "finished", "running", "started")

    def __init__(self) -> None:
        self.started = 0  # rounds started
        self.finished = 0  # the last round that finished
        self.running = False
        self.done: Any = None  # an anyio.Event set when the running round finishes


_groups: dict[int, _Group] = {}


async def flush_on_loop(bridge: Any) -> None:
    """Wait until everything queued so far is written, sharing the flush with the other runs ending on
    this loop (the bridge's `io` hops to a worker thread)."""
    group = _groups.get(threading.get_ident())
    if group is None:
        group = _groups[threading.get_ident()] = _Group()
    need = group.started + 1  # a round that starts from now on covers what this run recorded
    while group.finished < need:
        if group.running:
            await group.done.wait()
            continue
        group.running = True
        group.started += 1
        this, group.done = group.started, anyio.Event()
        try:
            await bridge.io(flush_store)
        finally:
            group.running = False
            group.finished = this
            group.done.set()


def _reset_in_child() -> None:
    _groups.clear()  # a round in flight at the fork is the parent's


_fork.register("root flushes", _reset_in_child)
