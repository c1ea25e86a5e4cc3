"""Which process owns a run, and whether that process is still alive (crash recovery).

A store remembers, for every run, the process that last wrote it: its host, the machine's boot id,
its pid and its start time (so a pid reused after a reboot or by another program is not mistaken for
the owner). When a store is opened, runs still open whose owner on this host is gone are recorded
`Crashed`. Owners on other hosts cannot be checked from here: their runs are left as they are.
"""

from __future__ import annotations

import os
from typing import Any

from .fold import STATE_CODES

# gethostname() is uname's nodename: without importing socket on the store's open path
HOST = os.uname().nodename if hasattr(os, "uname") else __import__("socket").gethostname()
OPEN_CONDITION = ("end_time IS NULL AND (state_type IS NULL OR state_type = 'RUNNING' "
                  "OR (state_type = 'PENDING' AND state_name <> 'NotReady') "
                  "OR (state_type = 'SCHEDULED' AND state_name = 'AwaitingRetry'))")
"""SQL: a run its process was carrying: started or about to start, or waiting to retry. A `Scheduled`
run waits in a broker for a worker (not for its caller), and `NotReady` never runs: neither is open."""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        raise
    except OSError:
        return None


def _boot_id() -> str:
    try:
        return (_read("/proc/sys/kernel/random/boot_id") or "").strip()
    except FileNotFoundError:
        return ""


BOOT = _boot_id()


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot) as /proc says; None where there is no
    /proc; raises ProcessLookupError for a process that does not exist (or is a zombie)."""
    try:
        text = _read(f"/proc/{pid}/stat")
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            raise ProcessLookupError(pid) from None
        return None
    if text is None:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
    if not fields or fields[0] in ("Z", "X"):
        raise ProcessLookupError(pid)
    return fields[19] if len(fields) > 19 else None


_me: tuple[int, tuple[str, str, int, str]] | None = None


def this_process() -> tuple[str, str, int, str]:
    """(host, boot id, pid, start time) of the calling process (recomputed after a fork)."""
    global _me
    pid = os.getpid()
    if _me is None or _me[0] != pid:
        try:
            started = _start_time(pid) or ""
        except ProcessLookupError:
            started = ""
        _me = (pid, (HOST, BOOT, pid, started))
    return _me[1]


def is_gone(host: str, boot: str, pid: int, started: str) -> bool | None:
    """True if that process has ended, False if it runs, None if this process cannot tell (another
    host)."""
    if host != HOST:
        return None
    if boot and BOOT and boot != BOOT:
        return True  # the machine rebooted since
    try:
        now = _start_time(pid)
    except ProcessLookupError:
        return True
    if now is None:  # no /proc: does the pid exist at all?
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    return bool(started) and now != started


def crash_open_runs(conn: Any, owner_id: int, message: str) -> int:
    """Record `Crashed` for the open runs of one dead owner, in the caller's transaction; returns how
    many. `conn` runs `?`-placeholder SQL (`execute`, `executemany`): a sqlite3 connection, or the
    PostgreSQL store's `Shared` one. The Crashed state takes the time of the run's last state: the
    process died after it, and a live process that goes on with the run (a background run delivered
    again) records newer states, which win."""
    crashed = 0
    for table in ("task_runs", "flow_runs"):
        runs = conn.execute(f"SELECT ref, id, coalesce(state_ts, created) FROM {table} WHERE owner = ? "
                            f"AND {OPEN_CONDITION}", (owner_id,)).fetchall()
        if not runs:
            continue
        conn.executemany(f"UPDATE {table} SET state_type = 'CRASHED', state_name = 'Crashed', state_message = ?, "
                         f"state_ts = ?, end_time = ? WHERE ref = ?", [(message, ts, ts, ref) for ref, _, ts in runs])
        # numbered from the counter states and log lines share (lines.py), under the caller's write lock
        seq = conn.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()[0]
        conn.executemany("INSERT INTO states (seq, run_ref, type, name, message, ts) "
                         f"VALUES (?, ?, {STATE_CODES['CRASHED']}, 'Crashed', ?, ?)",
                         [(seq + n, run_ref, message, ts) for n, (run_ref, _, ts) in enumerate(runs, 1)])
        conn.execute("UPDATE counters SET value = ? WHERE name = 'seq'", (seq + len(runs),))
        crashed += len(runs)
    return crashed


def crashed_message(owner: tuple[Any, ...]) -> str:
    host, _, pid, _ = owner
    return (f"The process that ran it (pid {pid} on {host}) ended before the run did: it was killed "
            f"(SIGKILL, out of memory) or crashed (or could no longer write to this store). Marked Crashed by "
            f"pid {os.getpid()} when it opened the store.")
