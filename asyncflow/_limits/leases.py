"""Held leases: renewed while their holder's code runs, released when it ends.

One background thread per process (started with the first lease, ended when none is left) renews
every held lease a few times per lease duration, so a lease outlives its holder only by its duration
if the holder crashes without releasing it (on this host the dead holder's slots are freed at once:
see `sql.free_dead_holders`). A `concurrency` block (or a task run's tag slot) is released before its
holder goes on (`release_waiting`): while the database is busy the holder waits between short attempts,
awaiting on an event loop (which keeps running) or sleeping in a thread, and only a database busy for
`RELEASE_WAIT_SECONDS` leaves the release to the same thread, which retries it. A release from a
cancelled or crashed run (`release`) makes one attempt and leaves the rest to the thread.

Every call into SQLite is one short attempt through the fork gate (`db.LimitsDB.attempt`). In a forked
child nothing is held (the parent's leases are the parent's) and no thread runs."""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
import time
from collections.abc import Awaitable, Callable

from .. import _fork
from .._clock import get_clock
from . import sql
from .db import Busy, LimitsDB


class _Held:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.leases: dict[str, tuple[LimitsDB, float]] = {}  # lease -> (its database, its duration)
        self.releases: list[tuple[LimitsDB, str]] = []  # releases that found the database busy
        self.thread: threading.Thread | None = None


_held = _Held()
RELEASE_WAIT_SECONDS = 5.0  # a holder waits this long for a busy database before leaving its release to the thread


def hold(db: LimitsDB, lease: str, seconds: float) -> None:
    """Renew `lease` (in `db`, for `seconds` at a time) until `release`."""
    with _held.lock:
        _held.leases[lease] = (db, seconds)
        _ensure_thread()
    _held.wake.set()  # (a shorter lease than the others: the thread recomputes its interval)


def release(db: LimitsDB, lease: str) -> None:
    """Stop renewing `lease` and free its slots now (if the database is busy, the thread does it soon)."""
    with _held.lock:
        _held.leases.pop(lease, None)
    try:
        db.attempt(lambda conn: sql.release(conn, lease))
        return
    except Busy:
        pass
    except Exception:  # an unusable database: its lease expires on its own
        return
    _hand_to_thread(db, lease)


async def release_waiting(db: LimitsDB, lease: str, sleep: Callable[[float], Awaitable[None]]) -> None:
    """Stop renewing `lease` and free its slots before returning: while another connection holds the
    write lock (the store's writer and this module's thread write the same file), wait between short
    attempts with `sleep`, up to `RELEASE_WAIT_SECONDS`; only then is it left to the thread."""
    with _held.lock:
        _held.leases.pop(lease, None)
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    delay = 0.002
    while True:
        try:
            db.attempt(functools.partial(sql.release, lease=lease))
            return
        except Busy:
            if time.monotonic() >= deadline:
                break
        except Exception:  # an unusable database: its lease expires on its own
            return
        await sleep(delay)
        delay = min(delay * 2, 0.05)
    _hand_to_thread(db, lease)


def _hand_to_thread(db: LimitsDB, lease: str) -> None:
    with _held.lock:
        _held.releases.append((db, lease))
        _ensure_thread()
    _held.wake.set()


def held() -> list[str]:
    with _held.lock:
        return list(_held.leases)


def _ensure_thread() -> None:
    """(with the lock) Start the renewing thread if it is not running."""
    if _held.thread is None or not _held.thread.is_alive():
        _held.thread = threading.Thread(target=_renew_loop, args=(_held,), name="asyncflow-limit-leases", daemon=True)
        _held.thread.start()


def _renew_loop(state: _Held) -> None:
    while True:
        with state.lock:
            if not state.leases and not state.releases:
                state.thread = None
                return
            leases = dict(state.leases)
            releases, state.releases = state.releases, []
        retry: list[tuple[LimitsDB, str]] = []
        for db, lease in releases:
            try:
                db.attempt(functools.partial(sql.release, lease=lease))
            except Busy:
                retry.append((db, lease))
            except Exception:
                pass
        by_db: dict[LimitsDB, list[tuple[str, float]]] = {}
        for lease, (db, seconds) in leases.items():
            by_db.setdefault(db, []).append((lease, seconds))
        now = get_clock().time()
        renew_failed = False
        for db, items in by_db.items():
            try:
                db.attempt(functools.partial(sql.renew, leases=items, now=now))
            except Exception:  # busy (try again soon) or unusable (the leases expire on their own)
                renew_failed = True
        with state.lock:
            state.releases.extend(retry)
        shortest = min((seconds for _, seconds in leases.values()), default=30.0)
        interval = 0.05 if retry or renew_failed else min(max(shortest / 3, 0.05), 30.0)
        state.wake.wait(interval)
        state.wake.clear()


def _release_all_at_exit() -> None:
    """A clean exit frees what is still held (a daemon thread is not waited for)."""
    with _held.lock:
        leases = [(db, lease) for lease, (db, _) in _held.leases.items()] + _held.releases
        _held.leases.clear()
        _held.releases = []
    for db, lease in leases:
        with contextlib.suppress(Exception):
            db.run(functools.partial(sql.release, lease=lease), wait=1.0)


def _reset_in_child() -> None:
    global _held
    _held = _Held()


atexit.register(_release_all_at_exit)
_fork.register("concurrency leases", reset_in_child=_reset_in_child)

