"""What one short transaction on the limit tables does. Pure functions of a sqlite3 connection (in
autocommit mode, `isolation_level=None`) and an explicit `now`, so tests drive time by hand.

A limit's slots in use = the slots of its unexpired leases + the `rate_limit` slots not yet decayed.
A claim takes the database's write lock (`BEGIN IMMEDIATE`) so two processes never both see a free
slot and take it. The same functions run on a PostgreSQL store (`pg.PgConnection`: `?` translated,
`BEGIN IMMEDIATE` as `BEGIN`), where a claim locks the rows of its limits (`for_update`) instead."""

from __future__ import annotations

import math
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

import attrs

from .._exceptions import ConcurrencySlotAcquisitionError
from .._store import owners as _owners
from .._store.base import ObjectAlreadyExists

TAG_PREFIX = "tag:"  # a tag-based task concurrency limit is the limit named "tag:<tag>" (as in Prefect)
_IDS = uuid.UUID("0d6c2f4e-6a0b-4f0e-9a53-6c1f1e1b7a11")  # the namespace of limits' ids (uuid5)


@attrs.frozen
class Limit:
    """A concurrency limit as stored, with the slots in use at the time it was read."""

    name: str
    limit: int
    active: bool
    slot_decay_per_second: float
    active_slots: float
    created: float
    updated: float

    @property
    def tag(self) -> str | None:
        return self.name[len(TAG_PREFIX):] if self.name.startswith(TAG_PREFIX) else None

    @property
    def id(self) -> uuid.UUID:
        """The limit's id (what Prefect's client returns): the same for as long as the limit keeps its
        name, a new one for a limit made again (or renamed). Derived, so the tables need no id column."""
        return uuid.uuid5(_IDS, f"{self.name}\0{self.created!r}")


@attrs.frozen
class Slot:
    """Slots of one limit held by one lease."""

    lease: str
    name: str
    slots: int
    expires: float
    holder: str | None
    host: str
    pid: int
    created: float


@attrs.frozen
class Claim:
    """The outcome of one attempt: `acquired` (the limits now held), else `blocked` (the full ones);
    `missing` names no limit; `inactive` limits do not limit."""

    acquired: tuple[Limit, ...] = ()
    blocked: tuple[Limit, ...] = ()
    missing: tuple[str, ...] = ()
    inactive: tuple[str, ...] = ()


# -- checks (bad input gets a clear error at the earliest point) ------------------------------------------
def check_names(names: Any, what: str = "names") -> list[str]:
    """`names` (one string or a list of strings) as a list without duplicates, in order."""
    values = [names] if isinstance(names, str) else names
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"concurrency limit {what} must be a string or a list of strings; got "
                        f"{type(names).__name__} {names!r}.")
    checked: list[str] = []
    for name in values:
        if not isinstance(name, str):
            raise TypeError(f"concurrency limit names must be strings; got {type(name).__name__} {name!r} "
                            f"in {names!r}.")
        if not name.strip() or name != name.strip():
            raise ValueError(f"concurrency limit name {name!r} is empty or has leading/trailing spaces: give the "
                             f"limit's name as `asyncflow gcl ls` shows it.")
        if name not in checked:
            checked.append(name)
    return checked


def check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a concurrency limit name must be a string; got {type(name).__name__} {name!r}.")
    return check_names([name])[0]


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"a concurrency limit must be a whole number of slots (an int >= 1); got "
                        f"{type(limit).__name__} {limit!r}.")
    if limit < 1:
        raise ValueError(f"a concurrency limit must be at least 1 slot; got {limit}. To stop everything that "
                         f"uses a limit for a while, disable it (`asyncflow gcl update NAME --disable` lets "
                         f"everything through) or delete it.")
    return limit


def check_occupy(occupy: Any) -> int:
    if isinstance(occupy, bool) or not isinstance(occupy, int) or occupy < 1:
        raise ValueError(f"occupy must be a whole number of slots >= 1; got {occupy!r}.")
    return occupy


def check_decay(decay: Any) -> float:
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) or decay < 0:
        raise ValueError(f"slot_decay_per_second must be a finite number >= 0 (0: slots are held until released); "
                         f"got {decay!r}.")
    return float(decay)


def check_seconds(value: Any, what: str, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0{' or None' if allow_none else ''}; "
                         f"got {value!r}.")
    return float(value)


# -- reads -------------------------------------------------------------------------------------------
_LIMIT_COLUMNS = "name, slot_limit, active, slot_decay_per_second, decayed_slots, decayed_at, created, updated"


def _decayed(row: Sequence[Any], now: float) -> float:
    """The `rate_limit` slots of a limit row still taken at `now`."""
    decay, slots, at = row[3], row[4], row[5]
    return max(0.0, slots - decay * max(0.0, now - at)) if slots else 0.0


def _held(conn: sqlite3.Connection, name: str, now: float) -> int:
    return conn.execute("SELECT coalesce(sum(slots), 0) FROM concurrency_slots WHERE name = ? AND expires > ?",
                        (name, now)).fetchone()[0]


def _limit(conn: sqlite3.Connection, row: Sequence[Any], now: float) -> Limit:
    used = _held(conn, row[0], now) + _decayed(row, now)
    return Limit(row[0], row[1], bool(row[2]), row[3], used, row[6], row[7])


def read(conn: sqlite3.Connection, name: str, now: float) -> Limit | None:
    row = conn.execute(f"SELECT {_LIMIT_COLUMNS} FROM concurrency_limits WHERE name = ?", (name,)).fetchone()
    return None if row is None else _limit(conn, row, now)


def read_all(conn: sqlite3.Connection, now: float, tags: bool | None = None, limit: int | None = None,
             offset: int = 0) -> list[Limit]:
    """Every limit by name (`tags=True`: only tag limits, `False`: only global ones), or `limit` of
    them after the first `offset`."""
    where = "" if tags is None else f"WHERE substr(name, 1, {len(TAG_PREFIX)}) {'=' if tags else '<>'} 'tag:' "
    page = "" if limit is None else f" LIMIT {int(limit)} OFFSET {int(offset)}"
    rows = conn.execute(f"SELECT {_LIMIT_COLUMNS} FROM concurrency_limits {where}ORDER BY name{page}").fetchall()
    return [_limit(conn, row, now) for row in rows]


def find_by_id(conn: sqlite3.Connection, limit_id: uuid.UUID, now: float) -> Limit | None:
    rows = conn.execute(f"SELECT {_LIMIT_COLUMNS} FROM concurrency_limits").fetchall()
    for row in rows:
        if Limit(row[0], row[1], bool(row[2]), row[3], 0.0, row[6], row[7]).id == limit_id:
            return _limit(conn, row, now)
    return None


def active_tag_limits(conn: sqlite3.Connection) -> frozenset[str]:
    rows = conn.execute("SELECT name FROM concurrency_limits WHERE name LIKE 'tag:%' AND active = 1").fetchall()
    return frozenset(row[0] for row in rows)


def slots_of(conn: sqlite3.Connection, name: str, now: float) -> list[Slot]:
    rows = conn.execute("SELECT lease, name, slots, expires, holder, host, pid, created FROM concurrency_slots "
                        "WHERE name = ? AND expires > ? ORDER BY created", (name, now)).fetchall()
    return [Slot(*row) for row in rows]


# -- management --------------------------------------------------------------------------------------
def create(conn: sqlite3.Connection, name: str, limit: int, decay: float, active: bool, now: float) -> Limit:
    inserted = conn.execute(f"INSERT INTO concurrency_limits ({_LIMIT_COLUMNS}) VALUES (?, ?, ?, ?, 0, ?, ?, ?) "
                            f"ON CONFLICT (name) DO NOTHING", (name, limit, int(active), decay, now, now, now))
    if inserted.rowcount == 0:
        raise _exists(name)
    return Limit(name, limit, active, decay, 0.0, now, now)


def _exists(name: str) -> ObjectAlreadyExists:
    return ObjectAlreadyExists(f"a concurrency limit named {name!r} exists already: change it with "
                               f"`asyncflow gcl update {name} --limit N` (or the client's "
                               f"update_global_concurrency_limit), or delete it first.")


def update(conn: sqlite3.Connection, name: str, now: float, *, limit: int | None = None, decay: float | None = None,
           active: bool | None = None, new_name: str | None = None) -> Limit | None:
    """Change a limit (None: keep that field; `new_name`: rename it, with the slots held now); None if
    there is no such limit."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        lock = getattr(conn, "for_update", "")
        row = conn.execute(f"SELECT {_LIMIT_COLUMNS} FROM concurrency_limits WHERE name = ?{lock}",
                           (name,)).fetchone()
        if row is None:
            conn.execute("COMMIT")
            return None
        if new_name is not None and new_name != name:
            if conn.execute("SELECT 1 FROM concurrency_limits WHERE name = ?", (new_name,)).fetchone() is not None:
                raise _exists(new_name)
            conn.execute("UPDATE concurrency_limits SET name = ? WHERE name = ?", (new_name, name))
            conn.execute("UPDATE concurrency_slots SET name = ? WHERE name = ?", (new_name, name))
            name = new_name
        decayed = _decayed(row, now)  # restart decay at `now`, so a new rate applies from now on
        conn.execute("UPDATE concurrency_limits SET slot_limit = ?, active = ?, slot_decay_per_second = ?, "
                     "decayed_slots = ?, decayed_at = ?, updated = ? WHERE name = ?",
                     (row[1] if limit is None else limit, row[2] if active is None else int(active),
                      row[3] if decay is None else decay, decayed, now, now, name))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return read(conn, name, now)


def delete(conn: sqlite3.Connection, name: str) -> bool:
    conn.execute("DELETE FROM concurrency_slots WHERE name = ?", (name,))
    return conn.execute("DELETE FROM concurrency_limits WHERE name = ?", (name,)).rowcount > 0


def reset(conn: sqlite3.Connection, name: str, now: float, keep: Sequence[str] = ()) -> bool:
    """Free every slot of a limit (its holders' leases and the rate-limit slots), but those of the
    holders named in `keep`."""
    marks = ",".join("?" * len(keep))
    spare = f" AND (holder IS NULL OR holder NOT IN ({marks}))" if keep else ""
    conn.execute(f"DELETE FROM concurrency_slots WHERE name = ?{spare}", (name, *keep))
    return conn.execute("UPDATE concurrency_limits SET decayed_slots = 0, decayed_at = ?, updated = ? WHERE name = ?",
                        (now, now, name)).rowcount > 0


# -- holding slots -----------------------------------------------------------------------------------
def claim(conn: sqlite3.Connection, names: Sequence[str], occupy: int, mode: str, lease: str, lease_seconds: float,
          holder: str | None, owner: tuple[str, str, int, str], now: float, strict: bool = False) -> Claim:
    """One attempt, in one transaction under the write lock: take `occupy` slots of every active limit
    named (all or none). `mode` "concurrency" leases them until `now + lease_seconds` (renew, release);
    "rate_limit" adds them to the limits' decaying slots; `strict`: nothing is taken if a name is not a
    limit. Raises ConcurrencySlotAcquisitionError for a
    request that can never succeed."""
    marks = ",".join("?" * len(names))
    lock = getattr(conn, "for_update", "")  # PostgreSQL: lock the limits' rows, in one order (no deadlock)
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(f"SELECT {_LIMIT_COLUMNS} FROM concurrency_limits WHERE name IN ({marks}) "
                            f"ORDER BY name{lock}", tuple(names)).fetchall()
        found = {row[0]: row for row in rows}
        missing = tuple(name for name in names if name not in found)
        inactive = tuple(name for name in names if name in found and not found[name][2])
        if missing and strict:
            conn.execute("COMMIT")
            return Claim(missing=missing, inactive=inactive)
        live = [found[name] for name in names if name in found and found[name][2]]
        _check_possible(live, occupy, mode)
        if live:
            conn.execute(f"DELETE FROM concurrency_slots WHERE expires <= ? AND name IN ({marks})", (now, *names))
        limits = [_limit(conn, row, now) for row in live]
        blocked = tuple(limit for limit in limits if limit.active_slots + occupy > limit.limit + 1e-9)
        if not blocked and live:
            if mode == "rate_limit":
                conn.executemany("UPDATE concurrency_limits SET decayed_slots = ?, decayed_at = ? WHERE name = ?",
                                 [(_decayed(row, now) + occupy, now, row[0]) for row in live])
            else:
                host, boot, pid, started = owner
                conn.executemany("INSERT INTO concurrency_slots (lease, name, slots, expires, holder, host, boot, "
                                 "pid, started, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 [(lease, row[0], occupy, now + lease_seconds, holder, host, boot, pid, started, now)
                                  for row in live])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    acquired = () if blocked else tuple(attrs.evolve(limit, active_slots=limit.active_slots + occupy)
                                        for limit in limits)
    return Claim(acquired, blocked, missing, inactive)


def _check_possible(rows: list[Sequence[Any]], occupy: int, mode: str) -> None:
    for row in rows:
        if occupy > row[1]:
            raise ConcurrencySlotAcquisitionError(
                f"Cannot acquire {occupy} slot(s) of concurrency limit {row[0]!r}: it has {row[1]} slot(s) in all, "
                f"so the request could never succeed. Ask for at most {row[1]}, or raise the limit "
                f"(`asyncflow gcl update {row[0]} --limit {occupy}`).")
        if mode == "rate_limit" and not row[3] > 0:
            raise ConcurrencySlotAcquisitionError(
                f"rate_limit needs a concurrency limit with slot decay, and {row[0]!r} has none (its slots would "
                f"never be freed). Give it one: `asyncflow gcl update {row[0]} --slot-decay-per-second 1`.")


def release(conn: sqlite3.Connection, lease: str) -> int:
    return conn.execute("DELETE FROM concurrency_slots WHERE lease = ?", (lease,)).rowcount


def renew(conn: sqlite3.Connection, leases: Sequence[tuple[str, float]], now: float) -> None:
    """Push back the expiry of held leases: [(lease, lease seconds)]."""
    conn.executemany("UPDATE concurrency_slots SET expires = ? WHERE lease = ?",
                     [(now + seconds, lease) for lease, seconds in leases])


def free_dead_holders(conn: sqlite3.Connection, names: Sequence[str]) -> int:
    """Free the slots of these limits held by processes on this host that have ended (killed, crashed):
    their leases would otherwise stay taken until they expire. Returns the slots freed."""
    marks = ",".join("?" * len(names))
    holders = conn.execute(f"SELECT DISTINCT host, boot, pid, started FROM concurrency_slots WHERE name IN ({marks})",
                           tuple(names)).fetchall()
    freed = 0
    for host, boot, pid, started in holders:
        if _owners.is_gone(host, boot, pid, started) is True:
            freed += conn.execute("DELETE FROM concurrency_slots WHERE host = ? AND boot = ? AND pid = ? AND "
                                  "started = ?", (host, boot, pid, started)).rowcount
    return freed
