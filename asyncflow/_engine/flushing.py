"""Group commit of root runs' records and log lines: when a root flow run ends, its log lines are
written and everything it recorded is in the store before its caller gets the result. On an event loop
that wait is a hop to a worker thread, which writes the queued lines and records itself
(`store.flush()`); with many flows ending at once (2,000 concurrent flows in a web service) one hop per
flow queued them all behind anyio's 40 worker threads, and one console write per flow made the loop
give up the GIL to the store's writer at every flow's end.

So the flows that end on one loop share rounds: a round writes every line and record queued before it
started, and a run that ends while one is in flight waits for it and then for the next one (which
starts after its lines and records were queued), started by whichever waiter gets there first. One
round per batch of ending runs, however many end meanwhile; no run gets its result before its own
lines and records are written. A waiter is shielded from cancellation (a cancelled flow's records are
written too); the store's flush timeout bounds a round.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio

from .. import _fork
from .._logging import flush as flush_logs
from .._store import flush as flush_store


class _Group:
    """The rounds of the loop running in one thread (only that thread touches it)."""

    __slots__ = ("done", "finished", "running", "started")

    def __init__(self) -> None:
        self.started = 0  # rounds started
        self.finished = 0  # the last round that finished
        self.running = False
        self.done: Any = None  # an anyio.Event set when the running round finishes


_groups: dict[int, _Group] = {}


def _write_out() -> Any:
    """A round, in a worker thread: the lines first (a console write off the loop's thread), then the
    records."""
    flush_logs()
    return flush_store()


async def flush_on_loop(bridge: Any, seconds: float, label: str, ids: dict[str, Any]) -> None:
    """Wait, shielded from cancellation, until every line and record queued so far is written, sharing
    the round with the other runs ending on this loop (the bridge's `io` hops to a worker thread). A
    round that takes longer than `seconds` is reported by the run that started it (`bridge.shielded`)."""
    group = _groups.get(threading.get_ident())
    if group is None:
        group = _groups[threading.get_ident()] = _Group()
    need = group.started + 1  # a round that starts from now on covers what this run queued
    try:
        await _wait_for_round(group, need, bridge, seconds, label, ids)
    except anyio.get_cancelled_exc_class():
        # cancelled while waiting: wait on, shielded, then let the cancellation through (a shielded
        # scope for every waiter would cost each ending flow more than its share of the round)
        with anyio.CancelScope(shield=True):
            await _wait_for_round(group, need, bridge, seconds, label, ids)
        raise


async def _wait_for_round(group: _Group, need: int, bridge: Any, seconds: float, label: str,
                          ids: dict[str, Any]) -> None:
    while group.finished < need:
        if group.running:
            await group.done.wait()
            continue
        group.running = True
        group.started += 1
        this, group.done = group.started, anyio.Event()
        try:
            await bridge.shielded(bridge.io(_write_out), seconds, label, ids)
        finally:
            group.running = False
            group.finished = this
            group.done.set()


def _reset_in_child() -> None:
    _groups.clear()  # a round in flight at the fork is the parent's


_fork.register("root flushes", _reset_in_child)
