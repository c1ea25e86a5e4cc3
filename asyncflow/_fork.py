"""Fork safety in one place: every component with threads, locks or process state registers here.

`os.fork()` copies the calling thread only. Every other thread is gone in the child, but what it held
is copied as it was: a lock it held stays locked for ever, a list of idle threads names threads that do
not exist, a registry of open runs names runs the parent owns. So each component registers what must
happen around a fork:

- `before()`: in the parent, just before the fork (for example: wait, bounded, until no thread of
  ours is inside SQLite or halfway through a write, by taking that lock);
- `after_in_parent()`: in the parent, just after (release what `before()` took);
- `reset_in_child()`: in the child (fresh locks, no inherited threads, no inherited runs).

Order: a child resets the components in the order of `ORDER` (lower layers first: ids, the store,
the thread pool, the log sink, the open runs, the brokers), then any other in registration order.
`before` hooks run in the reverse order and `after_in_parent` hooks in the same order, the way locks
are taken and released as a stack.

Every `before` hook together may delay a fork by at most `FORK_WAIT_SECONDS`: hooks wait with
`remaining()` as their timeout. A hook that raises is reported on stderr and the others still run: a
fork is never stopped by asyncflow.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

FORK_WAIT_SECONDS = 5.0  # the longest all `before` hooks together may delay one fork
ORDER = ("ids", "store factory", "store", "thread pool", "log sink", "open runs", "sqlite broker", "redis broker")

Hook = Callable[[], None]


class _Entry:
    __slots__ = ("after_in_parent", "before", "name", "reset_in_child")

    def __init__(self, name: str, reset_in_child: Hook, before: Hook | None, after_in_parent: Hook | None) -> None:
        self.name = name
        self.reset_in_child = reset_in_child
        self.before = before
        self.after_in_parent = after_in_parent


_entries: list[_Entry] = []
_deadline = 0.0


def register(name: str, reset_in_child: Hook, before: Hook | None = None,
             after_in_parent: Hook | None = None) -> None:
    """Register a component under `name` (registering the same name again replaces it)."""
    entry = _Entry(name, reset_in_child, before, after_in_parent)
    entries = [existing for existing in _entries if existing.name != name] + [entry]
    rank = {known: i for i, known in enumerate(ORDER)}
    entries.sort(key=lambda e: rank.get(e.name, len(ORDER)))  # stable: the others keep their order
    _entries[:] = entries


def names() -> list[str]:
    """The registered components, in the order a child resets them."""
    return [entry.name for entry in _entries]


def remaining() -> float:
    """Seconds a `before` hook may still wait during the current fork (0 when the budget is spent)."""
    return max(0.0, _deadline - time.monotonic())


def _report(entry: _Entry, stage: str) -> None:
    try:
        exc = sys.exc_info()[1]
        sys.stderr.write(f"asyncflow: the at-fork hook {stage} of {entry.name!r} failed: "
                         f"{type(exc).__name__}: {exc}\n")
    except Exception:
        pass


def _before() -> None:
    global _deadline
    _deadline = time.monotonic() + FORK_WAIT_SECONDS
    for entry in reversed(list(_entries)):
        if entry.before is not None:
            try:
                entry.before()
            except Exception:
                _report(entry, "before")


def _after_in_parent() -> None:
    for entry in list(_entries):
        if entry.after_in_parent is not None:
            try:
                entry.after_in_parent()
            except Exception:
                _report(entry, "after_in_parent")


def _after_in_child() -> None:
    for entry in list(_entries):
        try:
            entry.reset_in_child()
        except Exception:
            _report(entry, "reset_in_child")


class Gate:
    """A door around calls into a C library that a fork must not cut in half: SQLite takes process-wide
    mutexes (its allocator's, its file table's) inside every call, and a thread inside one at the fork
    leaves the mutex locked for ever in the child, which hangs at its first SQLite call. Threads pass
    with `with gate:` (they may pass together); `close()` (a `before` hook) waits, bounded by the fork's
    budget, until none is inside and keeps new ones at the door; `open()` (`after_in_parent`) lets them
    in; `reset()` (in the child) makes a fresh, open door. Keep what runs inside short: a call that waits
    (a busy database) should wait outside, between short attempts."""

    __slots__ = ("_closed", "_cond", "_inside")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._closed = False

    def __enter__(self) -> None:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._inside += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._cond:
            self._inside -= 1
            if not self._inside:
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.wait_for(lambda: not self._inside, timeout=remaining())

    def open(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
