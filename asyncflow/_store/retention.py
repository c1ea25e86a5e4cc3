"""Retention: deleting flow runs, pruning old finished runs, and doing it automatically.

The SQL works on a `sqlite3` connection (or a PostgreSQL one that takes the same placeholders: the SQL is
portable) and returns how many rows it removed per table; it never commits.
`SQLiteStore.delete_flow_runs` / `SQLiteStore.prune` flush, take the store's write lock and run it in
transactions (pruning: one transaction per batch, so the lock is held for milliseconds at
a time and memory stays flat however many rows go). The memory store has its own two methods.

What a prune removes, for a cutoff time:

- flow runs in a final state (COMPLETED, FAILED, CRASHED, CANCELLED: `Cached`, `TimedOut`... are
  names of those types) whose end time (else the time of their last state) is before the cutoff,
  with their states, their log lines and all their task runs (open or not: they go with their flow); a
  task run's packed states (history.py) go with its row, and their rows in `appends` with them;
- task runs outside any flow run (or whose flow run is gone) under the same rule;
- states and log lines older than the cutoff whose run is not in the store (orphans);
- `flows` rows with no run left.

Runs that are not final are kept, however old. `prune_everything` is the one entry point of the CLI
and of the automatic retention (`ASYNCFLOW_STORE_RETENTION`): the run store, then `PRUNERS`.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .._states import FINAL_TYPES
from . import history
from .base import as_uuid

TABLES = ("flow_runs", "task_runs", "states", "logs", "flows")
BATCH_RUNS = 500  # runs looked at (and at most removed) per batch: with their states, a few thousand rows
BATCH_ROWS = 5000  # log lines or orphan states per batch
_CHUNK = 500  # ids per IN (...) list
WRITE_SLACK_SECONDS = DAY = 86400.0  # how much later than recorded a row may be written (see _next)
_FINAL = "(" + ", ".join(f"'{t.value}'" for t in sorted(FINAL_TYPES, key=lambda t: t.value)) + ")"


def _prunable(alias: str) -> str:
    """SQL: the run `alias` is final and ended before the cutoff (the named parameter :before)."""
    return (f"CASE WHEN {alias}.state_type IN {_FINAL} "
            f"AND coalesce({alias}.end_time, {alias}.state_ts) < :before THEN 1 ELSE 0 END")


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(TABLES, 0)


def add_counts(total: dict[str, int], more: Mapping[str, int] | None) -> dict[str, int]:
    for name, n in (more or {}).items():
        total[name] = total.get(name, 0) + int(n)
    return total


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _marks(items: list[Any]) -> str:
    return ",".join("?" * len(items))


def _flows(marks: str) -> str:
    """The numbers of the flow runs whose ids are `marks` (task runs point at their flow run by number)."""
    return f"(SELECT ref FROM flow_runs WHERE id IN ({marks}))"


# -- deleting flow runs ------------------------------------------------------------------------------
def delete_flow_runs(conn: sqlite3.Connection, ids: Iterable[Any], gone: set[str] | None = None) -> dict[str, int]:
    """Delete these flow runs and everything under them: their subflow runs (recursively), the task runs
    of all of them, their states and log lines, and `flows` rows left without runs. In the caller's
    transaction. Ids that are not in the store are ignored. `gone`, if given, receives the ids of the
    flow runs and task runs deleted (the store forgets what it cached about them)."""
    roots = list(dict.fromkeys(str(as_uuid(value, "flow_run_id")) for value in ids))
    tree: list[str] = []
    for chunk in _chunks(roots):
        tree.extend(row[0] for row in conn.execute(
            f"WITH RECURSIVE tree(id) AS (SELECT id FROM flow_runs WHERE id IN ({_marks(chunk)}) "
            f"UNION SELECT f.id FROM flow_runs f JOIN tree ON f.parent_flow_run_id = tree.id) SELECT id FROM tree",
            chunk))
    tree = list(dict.fromkeys(tree))
    counts = zero_counts()
    for chunk in _chunks(tree):
        marks = _marks(chunk)
        if gone is not None:
            gone.update(chunk)
            gone.update(row[0] for row in conn.execute(
                f"SELECT id FROM task_runs WHERE flow_ref IN {_flows(marks)}", chunk))
        counts["logs"] += conn.execute(f"DELETE FROM logs WHERE flow_run_id IN ({marks})", chunk).rowcount
        _packed(conn, counts, f"flow_ref IN {_flows(marks)}", chunk, dry_run=False)
        where = (f"run_ref IN (SELECT ref FROM task_runs WHERE flow_ref IN {_flows(marks)} "
                 f"UNION ALL SELECT ref FROM flow_runs WHERE id IN ({marks}))")
        counts["logs"] += _lines_in(conn, where, chunk + chunk)
        counts["states"] += conn.execute(f"DELETE FROM states WHERE {where}", chunk + chunk).rowcount
        counts["states"] += conn.execute(  # states whose run record had not arrived when they were written
            f"DELETE FROM states WHERE run_ref IS NULL AND (run_id IN ({marks}) OR run_id IN "
            f"(SELECT id FROM task_runs WHERE flow_ref IN {_flows(marks)}))", chunk + chunk).rowcount
        counts["task_runs"] += conn.execute(f"DELETE FROM task_runs WHERE flow_ref IN {_flows(marks)}",
                                            chunk).rowcount
        counts["flow_runs"] += conn.execute(f"DELETE FROM flow_runs WHERE id IN ({marks})", chunk).rowcount
    if tree:
        counts["flows"] += _drop_unused_flows(conn)
    return counts


def _drop_unused_flows(conn: sqlite3.Connection) -> int:
    return conn.execute("DELETE FROM flows WHERE NOT EXISTS "
                        "(SELECT 1 FROM flow_runs r WHERE r.flow_name = flows.name)").rowcount


# -- pruning ----------------------------------------------------------------------------------------
class Cursor(NamedTuple):
    """Where a prune is: the phase and the last ref (or seq) it has looked at."""

    phase: int = 0
    after: int = 0


START = Cursor()
_TASK_RUNS, _FLOW_RUNS, _ORPHAN_STATES, _ORPHAN_LOGS, _FLOWS = range(5)


def prune(conn: sqlite3.Connection, before_ts: float, *, dry_run: bool = False) -> dict[str, int]:
    """Prune everything final that ended before `before_ts`, batch after batch, in the caller's
    transaction (see the module's docstring for what goes). `dry_run` counts and deletes nothing."""
    totals, cursor = zero_counts(), START  # type: dict[str, int], Cursor | None
    while cursor is not None:
        counts, cursor = prune_batch(conn, before_ts, cursor, dry_run=dry_run)
        add_counts(totals, counts)
    return totals


def prune_batch(conn: sqlite3.Connection, before_ts: float, cursor: Cursor = START, *, dry_run: bool = False,
                batch_runs: int = BATCH_RUNS, batch_rows: int = BATCH_ROWS) -> tuple[dict[str, int], Cursor | None]:
    """One bounded step of a prune: at most `batch_runs` runs or `batch_rows` log lines/states. Returns
    its counts and the cursor of the next step (None when the prune is complete). Run each step in a
    transaction of its own to keep the write lock short; a step that fails leaves the cursor where it
    was, so it can be retried."""
    if not math.isfinite(before_ts):
        raise ValueError(f"before_ts must be a finite time; got {before_ts!r}.")
    counts = zero_counts()
    phase, after = cursor
    params: dict[str, Any] = {"before": before_ts, "after": after, "n": batch_runs}
    if phase == _TASK_RUNS:
        rows = conn.execute(
            f"SELECT t.ref, t.id, t.flow_ref, t.created, CASE WHEN f.ref IS NULL THEN {_prunable('t')} "
            f"ELSE {_prunable('f')} END FROM task_runs t LEFT JOIN flow_runs f ON f.ref = t.flow_ref "
            f"WHERE t.ref > :after ORDER BY t.ref LIMIT :n", params).fetchall()
        refs = [row[0] for row in rows if row[4]]
        roots = [row[1] for row in rows if row[4] and row[2] is None]  # their lines are not under a flow run
        for chunk in _chunks(refs):
            counts["logs"] += _lines_in(conn, f"run_ref IN ({_marks(chunk)})", chunk)
            counts["states"] += _delete_or_count(conn, dry_run, "states", f"run_ref IN ({_marks(chunk)})", chunk)
            _packed(conn, counts, f"ref IN ({_marks(chunk)})", chunk, dry_run)
            if not dry_run:
                counts["task_runs"] += conn.execute(
                    f"DELETE FROM task_runs WHERE ref IN ({_marks(chunk)})", chunk).rowcount
        if dry_run:
            counts["task_runs"] += len(refs)
        for chunk in _chunks(roots):
            counts["logs"] += _delete_or_count(conn, dry_run, "logs",
                                               f"flow_run_id IS NULL AND task_run_id IN ({_marks(chunk)})", chunk)
        return counts, _next(rows, phase, before_ts, created=3)
    if phase == _FLOW_RUNS:
        rows = conn.execute(f"SELECT r.ref, r.id, r.created, {_prunable('r')} FROM flow_runs r WHERE r.ref > :after "
                            f"ORDER BY r.ref LIMIT :n", params).fetchall()
        refs = [row[0] for row in rows if row[3]]
        ids = [row[1] for row in rows if row[3]]
        if not dry_run and ids:
            # their log lines first, a bounded number per step: a flow run may have millions
            left = batch_rows
            for chunk in _chunks(ids):
                deleted = conn.execute(f"DELETE FROM logs WHERE seq IN (SELECT seq FROM logs WHERE flow_run_id IN "
                                       f"({_marks(chunk)}) LIMIT ?)", [*chunk, left]).rowcount
                counts["logs"] += deleted
                left -= deleted
                if left <= 0:
                    return counts, cursor  # the same flow runs again, for the rest of their lines
            for chunk in _chunks(ids):  # task runs recorded since the task-run phase looked
                marks = _marks(chunk)
                where = f"run_ref IN (SELECT ref FROM task_runs WHERE flow_ref IN {_flows(marks)})"
                _packed(conn, counts, f"flow_ref IN {_flows(marks)}", chunk, dry_run=False)
                counts["logs"] += _lines_in(conn, where, chunk)
                counts["states"] += conn.execute(f"DELETE FROM states WHERE {where}", chunk).rowcount
                counts["task_runs"] += conn.execute(
                    f"DELETE FROM task_runs WHERE flow_ref IN {_flows(marks)}", chunk).rowcount
        elif ids:
            for chunk in _chunks(ids):
                counts["logs"] += _delete_or_count(conn, True, "logs", f"flow_run_id IN ({_marks(chunk)})", chunk)
        for chunk in _chunks(refs):
            counts["logs"] += _lines_in(conn, f"run_ref IN ({_marks(chunk)})", chunk)
            counts["states"] += _delete_or_count(conn, dry_run, "states", f"run_ref IN ({_marks(chunk)})", chunk)
            if not dry_run:
                counts["flow_runs"] += conn.execute(
                    f"DELETE FROM flow_runs WHERE ref IN ({_marks(chunk)})", chunk).rowcount
        if dry_run:
            counts["flow_runs"] += len(refs)
        return counts, _next(rows, phase, before_ts, created=2)
    if phase == _ORPHAN_STATES:  # states written before their run's record arrived (or after it was deleted)
        where = "run_ref IS NULL AND ts < ?"
        if dry_run:
            counts["states"] = _delete_or_count(conn, True, "states", where, [before_ts])
            return counts, Cursor(phase + 1)
        counts["states"] = conn.execute(f"DELETE FROM states WHERE seq IN (SELECT seq FROM states WHERE {where} "
                                        f"LIMIT ?)", [before_ts, batch_rows]).rowcount
        return counts, cursor if counts["states"] >= batch_rows else Cursor(phase + 1)
    if phase == _ORPHAN_LOGS:  # old lines whose run is not in the store
        rows = conn.execute(
            "SELECT l.seq, l.ts, CASE WHEN l.flow_run_id IS NOT NULL "
            "THEN (CASE WHEN EXISTS (SELECT 1 FROM flow_runs f WHERE f.id = l.flow_run_id) THEN 0 ELSE 1 END) "
            "WHEN l.task_run_id IS NOT NULL "
            "THEN (CASE WHEN EXISTS (SELECT 1 FROM task_runs t WHERE t.id = l.task_run_id) THEN 0 ELSE 1 END) "
            "ELSE 1 END FROM logs l WHERE l.seq > :after ORDER BY l.seq LIMIT :n",
            {**params, "n": batch_rows}).fetchall()
        seqs = [row[0] for row in rows if row[2] and row[1] < before_ts]
        for chunk in _chunks(seqs):
            counts["logs"] += (len(chunk) if dry_run else
                               conn.execute(f"DELETE FROM logs WHERE seq IN ({_marks(chunk)})", chunk).rowcount)
        return counts, _next(rows, phase, before_ts, created=1)
    if phase == _FLOWS:
        if dry_run:  # flows all of whose runs would go
            counts["flows"] = conn.execute(
                f"SELECT count(*) FROM flows WHERE NOT EXISTS (SELECT 1 FROM flow_runs r WHERE "
                f"r.flow_name = flows.name AND {_prunable('r')} = 0)", params).fetchone()[0]
        else:
            counts["flows"] = _drop_unused_flows(conn)
        return counts, None
    raise ValueError(f"not a prune cursor: {cursor!r}")


def _lines_in(conn: sqlite3.Connection, where: str, params: list[Any]) -> int:
    """The engine's lines marked on the states `where` selects (lines.py): log lines that go with them."""
    return int(conn.execute(f"SELECT count(*) FROM states WHERE line IS NOT NULL AND {where}", params).fetchone()[0])


def _packed(conn: sqlite3.Connection, counts: dict[str, int], where: str, params: list[Any], dry_run: bool) -> None:
    """The packed states (and the engine's lines marked on them) of the task runs `where` selects, counted
    (they go with their rows); their rows in `appends` are deleted unless `dry_run` (history.py)."""
    keys: list[int] = []
    for (packed,) in conn.execute(f"SELECT history FROM task_runs WHERE history IS NOT NULL AND {where}", params):
        states, lines = history.count(packed)
        counts["states"] += states
        counts["logs"] += lines
        keys += history.append_keys(packed)
    if not dry_run:
        for chunk in _chunks(keys):
            conn.execute(f"DELETE FROM appends WHERE seq IN ({_marks(chunk)})", chunk)


def _delete_or_count(conn: sqlite3.Connection, dry_run: bool, table: str, where: str, params: list[Any]) -> int:
    if dry_run:
        return int(conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0])
    return int(conn.execute(f"DELETE FROM {table} WHERE {where}", params).rowcount)


def _next(rows: list[Any], phase: int, before_ts: float, created: int) -> Cursor:
    """The next window of this phase, or the next phase when this one has nothing left to look at: no
    rows, or a whole window recorded more than WRITE_SLACK_SECONDS after the cutoff. Rows are numbered
    in the order they are written, which follows the time they were recorded to within a writer's delay,
    so what follows is newer still (a row written later than that is pruned by a later prune)."""
    if not rows or min(row[created] for row in rows) >= before_ts + WRITE_SLACK_SECONDS:
        return Cursor(phase + 1)
    return Cursor(phase, rows[-1][0])


def cutoff(older_than_seconds: float, now: float | None = None) -> float:
    """The time before which finished runs are pruned; checks the argument."""
    if isinstance(older_than_seconds, bool) or not isinstance(older_than_seconds, (int, float)) \
            or not 0 <= older_than_seconds < math.inf:
        raise ValueError(f"older_than_seconds must be a finite number of seconds >= 0; got {older_than_seconds!r}.")
    return (time.time() if now is None else now) - float(older_than_seconds)


def existing_run_ids(conn: sqlite3.Connection, ids: Iterable[str]) -> set[str]:
    """Which of these run ids (flow runs or task runs) are in the store."""
    found: set[str] = set()
    for chunk in _chunks(list(ids)):
        marks = _marks(chunk)
        found.update(row[0] for row in conn.execute(
            f"SELECT id FROM task_runs WHERE id IN ({marks}) UNION ALL SELECT id FROM flow_runs WHERE id IN ({marks})",
            chunk + chunk))
    return found


# -- everything that keeps old things -----------------------------------------------------------------
# Each pruner is a callable
#     pruner(older_than_seconds: float, *, dry_run: bool) -> Mapping[str, int] | None
# returning how many things it removed, by a name of its own such as {"broker_runs": 12}; None when it
# has nothing to say (it cannot count without removing). `prune_everything` calls them in order after
# the run store; one that raises is reported on stderr and skipped. They import lazily, so that
# importing asyncflow stays cheap. `PRUNERS` run on every prune; `COMMAND_PRUNERS` only when asked
# for (`asyncflow store prune`): the broker keeps its own retention (workers prune it hourly, Redis
# expires finished runs), and an automatic pass in every process must not connect to Redis.
def _prune_lock_files(older_than_seconds: float, *, dry_run: bool) -> Mapping[str, int] | None:
    from .._results import prune_locks

    return None if dry_run else {"lock_files": prune_locks(older_than_seconds)}


def _prune_broker(older_than_seconds: float, *, dry_run: bool) -> Mapping[str, int] | None:
    from .._workers.broker import get_broker

    return None if dry_run else {"broker_runs": get_broker().prune(older_than_seconds)}


PRUNERS: list[Callable[..., Mapping[str, int] | None]] = [_prune_lock_files]
COMMAND_PRUNERS: list[Callable[..., Mapping[str, int] | None]] = [_prune_broker]


def prune_everything(older_than_seconds: float, *, store: Any = None, dry_run: bool = False,
                     command: bool = False) -> dict[str, int]:
    """Prune what finished more than `older_than_seconds` ago: the run store (`store`, default the
    process's), then every entry of PRUNERS (and of COMMAND_PRUNERS for `command=True`: the CLI).
    Returns the counts per table (and per pruner's names)."""
    cutoff(older_than_seconds)  # checks the argument before anything is removed
    if store is None:
        from . import get_store

        store = get_store()
    counts = add_counts(zero_counts(), store.prune(older_than_seconds, dry_run=dry_run))
    for pruner in [*PRUNERS, *(COMMAND_PRUNERS if command else ())]:
        try:
            add_counts(counts, pruner(older_than_seconds, dry_run=dry_run))
        except Exception as exc:  # one pruner's failure does not stop the others
            _report(f"pruning with {getattr(pruner, '__qualname__', pruner)!s} failed: {type(exc).__name__}: {exc}")
    return counts


def _report(message: str) -> None:
    from .writer import report

    report(message)


# -- automatic retention ---------------------------------------------------------------------------
STAMP_FILE_NAME = "last-prune"  # in ASYNCFLOW_HOME: the time of the last automatic prune
INTERVAL_SECONDS = 3600.0  # at most one automatic prune per home in this time
_automatic: weakref.WeakKeyDictionary[Any, threading.Thread] = weakref.WeakKeyDictionary()  # store -> its thread
automatic_passes: list[dict[str, int] | None] = []  # what each automatic pass did (None: not due), for tests


def claim(home: Path, now: float | None = None, interval: float = INTERVAL_SECONDS) -> bool:
    """True if this process should prune the home now: no prune in the last `interval` seconds (by the
    stamp file), and no other process claiming at this moment. Claiming writes the stamp."""
    now = time.time() if now is None else now
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(home / STAMP_FILE_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError:
        return False  # an unusable home: the store reports that itself
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when fd is closed
        except ImportError:  # Windows: two processes may both prune, which is harmless
            pass
        except OSError:
            return False  # another process is claiming right now
        try:
            last = float(os.read(fd, 64).decode("ascii").strip())
        except (ValueError, UnicodeDecodeError):
            last = -math.inf
        if abs(now - last) < interval:  # (a stamp more than that in the future: the clock went back)
            return False
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{now!r}\n".encode("ascii"))
        return True
    finally:
        os.close(fd)


def run_automatic_once(store: Any, home: Path | None = None) -> dict[str, int] | None:
    """One automatic pass: if ASYNCFLOW_STORE_RETENTION is on and the home is due, prune everything
    older than it. Returns the counts, or None if nothing was due."""
    from .. import _settings

    keep = _settings.STORE_RETENTION.value()
    if keep is None:
        return None
    home = _settings.HOME.value() if home is None else home
    if not claim(Path(home)):
        return None
    return prune_everything(keep, store=store)


def start_automatic(store: Any) -> threading.Thread | None:
    """Apply the retention setting to `store` in a background thread: now, then every hour while the
    store is open (each pass prunes only if no process pruned this home in the last hour). Never
    raises; the thread is a daemon, holds the store's write lock one batch at a time and so never
    delays a flush or the exit by more than one batch."""
    if store in _automatic or getattr(store, "_closed", False):
        return None
    thread = threading.Thread(target=_automatic_main, args=(weakref.ref(store),), name="asyncflow-retention",
                              daemon=True)
    _automatic[store] = thread
    thread.start()
    return thread


def _automatic_main(store_ref: weakref.ref[Any]) -> None:
    while True:
        store = store_ref()
        if store is None or getattr(store, "_closed", False):
            return
        try:
            automatic_passes.append(run_automatic_once(store))
        except Exception as exc:
            if not getattr(store, "_closed", False):  # a store closed under us (exit) is no news
                _report(f"automatic pruning (ASYNCFLOW_STORE_RETENTION) failed: {type(exc).__name__}: {exc}")
        del store  # not kept alive by this thread while it sleeps
        time.sleep(INTERVAL_SECONDS)


def _reset_in_child() -> None:
    _automatic.clear()  # the parent's retention threads do not exist here


def _register_fork_reset() -> None:
    from .. import _fork

    _fork.register("retention", reset_in_child=_reset_in_child)


_register_fork_reset()

__all__ = ["BATCH_ROWS", "BATCH_RUNS", "COMMAND_PRUNERS", "PRUNERS", "START", "TABLES", "Cursor", "claim", "cutoff",
           "delete_flow_runs", "existing_run_ids", "prune", "prune_batch", "prune_everything", "run_automatic_once",
           "start_automatic", "zero_counts"]
