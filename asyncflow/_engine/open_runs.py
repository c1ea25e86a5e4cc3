"""Runs that have started and not yet ended. A run is never left `Running` in the store because its
process went away: at interpreter exit, and on SIGTERM or SIGHUP (see `asyncflow._signals`), any run
still open is recorded `Crashed`.

`OPEN` is a dict (run id -> run record, task runs and flow runs) that the engine fills and empties
directly (`OPEN[run.id] = run`, `OPEN.pop(run.id, None)`: ~50 ns, the hot path). Its class changes
over the life of the process, so that what must happen once costs nothing afterwards:

- `_FirstOpen` until the first run opens: that insertion installs the SIGTERM/SIGHUP handlers (main
  thread only, and only where the application left the default handler), then the class becomes
- `_Open`: a plain dict in all but name (no Python-level method; inserting costs what a dict costs);
- `_Exiting` once the exit handler has run: a run that opens while the interpreter exits (a daemon
  thread still going) is recorded `Crashed` as it opens.

In a forked child `OPEN` is emptied: the parent's runs are the parent's to end (B6).
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import Any, cast
from uuid import UUID

from .. import _fork
from .._states import FINAL_TYPES, State, StateType
from .._store import flush, get_store
from .._store.base import set_open_runs

EXIT_MESSAGE = "The process exited while the run was still open."


class _Open(dict):  # type: ignore[type-arg]
    __slots__ = ()


class _FirstOpen(_Open):
    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:
        _first_open(self)
        dict.__setitem__(self, key, value)


class _Exiting(_Open):
    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, value)
        if _end_runs([value], EXIT_MESSAGE):
            flush()


OPEN: dict[Any, Any] = _FirstOpen()  # run id -> run record (task runs and flow runs)
set_open_runs(lambda: list(OPEN.values()))  # (a store that degrades to memory carries them over)

_lock = threading.Lock()
_ended: set[Any] = set()  # runs recorded Crashed at exit or on a signal: later non-final states are dropped
_foreign: set[Any] = set()  # in a forked child: the parent's runs that were open at the fork


def _first_open(open_runs: dict[Any, Any]) -> None:
    with _lock:
        if type(open_runs) is not _FirstOpen:
            return
        cast(Any, open_runs).__class__ = _Open
    if threading.current_thread() is threading.main_thread():
        from .. import _signals

        _signals.install()
    # A first run that opens on another thread (a flow started in a thread) cannot install signal
    # handlers (Python only allows it on the main thread); asyncflow does not try again later, so the
    # hot path stays a plain dict. `asyncflow._signals.install()` can be called from the main thread.


class _GuardedStore:
    """The process's store, once the process is ending or is a forked child, behind a filter (the hot
    path of a running parent never goes through it):

    - a run recorded Crashed at exit or on a signal keeps that state unless it really ends: a thread
      that goes on during interpreter exit (L8) may still record Completed or Failed, which is then
      true, but not move the run back to Running;
    - in a forked child, nothing is recorded for the parent's runs that were open at the fork: if the
      child goes on in the code of such a run (it forked inside a task and returned, or raised
      SystemExit), the run is still the parent's to end (B6).

    Everything else (reads, flush, the other records) goes straight to the store it wraps."""

    def __init__(self, store: Any) -> None:
        self.inner = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def record_state(self, run_id: Any, state: State[Any]) -> None:
        if run_id in _foreign or (run_id in _ended and state.type not in FINAL_TYPES):
            return
        self.inner.record_state(run_id, state)

    def record_log(self, *, flow_run_id: Any, task_run_id: Any, **fields: Any) -> None:
        if _foreign and ((task_run_id is not None and UUID(task_run_id) in _foreign) or
                         (task_run_id is None and flow_run_id is not None and UUID(flow_run_id) in _foreign)):
            return
        self.inner.record_log(flow_run_id=flow_run_id, task_run_id=task_run_id, **fields)

    def record_state_line(self, run_id: Any, code: int, flow_id: Any, flow_run_id: Any, task_run_id: Any,
                          level: str, message: str, ts: float) -> None:
        """Stored as a plain log line here: the state it is about may have been filtered out."""
        self.record_log(flow_run_id=flow_run_id, task_run_id=task_run_id, level=level, message=message, ts=ts)

    def record_task_run(self, run: Any, state: State[Any] | None = None) -> None:
        if run.id not in _foreign:
            self.inner.record_task_run(run, state)

    def record_flow_run(self, run: Any, state: State[Any] | None = None) -> None:
        if run.id not in _foreign:
            self.inner.record_flow_run(run, state)


def _guard_store() -> None:
    """Put the process's store (if it has one) behind `_GuardedStore`, once."""
    from .. import _store

    with _store._lock:
        store = _store._store
        if store is not None and not isinstance(store, _GuardedStore):
            _store._store = _GuardedStore(store)


def _end_runs(runs: list[Any], message: str) -> int:
    """Record each run that is not final yet `Crashed` with `message`; returns how many."""
    store = get_store()
    ended = 0
    for run in runs:
        current = run.state
        if current.type in FINAL_TYPES:  # ended meanwhile, only not yet out of OPEN
            continue
        state: State[Any] = State(StateType.CRASHED, "Crashed", message, None, current.state_details, time.time())
        run.state = state
        _ended.add(run.id)
        store.record_state(run.id, state)
        ended += 1
    if ended:
        _guard_store()
    return ended


def end_open_runs(message: str) -> int:
    """Record every open run `Crashed` with `message` and flush the store; returns how many were
    recorded. Used at interpreter exit and by the SIGTERM/SIGHUP handler."""
    total = 0
    for _ in range(3):  # a run that opened while the first round was recorded is caught by the next
        runs = list(OPEN.values())
        if not runs:
            break
        total += _end_runs(runs, message)
        for run in runs:
            OPEN.pop(run.id, None)
    if total:
        flush()
    return total


def _record_open_runs_crashed() -> None:
    """atexit runs handlers last-registered first, so the store's own exit flush (registered when the
    store was created, after this module was imported) has already run: flush again after recording."""
    OPEN.__class__ = _Exiting  # runs that open from now on are recorded Crashed as they open
    if not OPEN:
        return  # nothing to record: do not create a store at exit
    end_open_runs(EXIT_MESSAGE)


def _reset_in_child() -> None:
    """The parent's runs are the parent's: a child neither records them Crashed when it exits nor
    records anything else for them (B6)."""
    global _lock
    foreign = list(OPEN)
    OPEN.clear()
    _lock = threading.Lock()
    if foreign:
        _foreign.update(foreign)
        _guard_store()


atexit.register(_record_open_runs_crashed)
_fork.register("open runs", reset_in_child=_reset_in_child)
