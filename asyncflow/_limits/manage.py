"""Creating, changing, reading and deleting limits (what the CLI and the client call). Every function
takes the limit tables to use (`db`; default: the process's store's) and checks its arguments first."""

from __future__ import annotations

from .._clock import get_clock
from . import sql
from .db import LimitsDB, current_or_raise


def _db(db: LimitsDB | None) -> LimitsDB:
    return db if db is not None else current_or_raise()


def _changed(db: LimitsDB) -> None:
    from . import tags

    tags.forget(db)  # this process sees a new or removed tag limit at once


def create_limit(name: str, limit: int, *, slot_decay_per_second: float = 0.0, active: bool = True,
                 db: LimitsDB | None = None) -> sql.Limit:
    name, limit, decay = sql.check_name(name), sql.check_limit(limit), sql.check_decay(slot_decay_per_second)
    db = _db(db)
    now = get_clock().time()
    created = db.run(lambda conn: sql.create(conn, name, limit, decay, bool(active), now))
    _changed(db)
    return created


def update_limit(name: str, *, limit: int | None = None, slot_decay_per_second: float | None = None,
                 active: bool | None = None, db: LimitsDB | None = None) -> sql.Limit:
    name = sql.check_name(name)
    limit = None if limit is None else sql.check_limit(limit)
    decay = None if slot_decay_per_second is None else sql.check_decay(slot_decay_per_second)
    db = _db(db)
    now = get_clock().time()
    updated = db.run(lambda conn: sql.update(conn, name, now, limit=limit, decay=decay, active=active))
    if updated is None:
        raise KeyError(_not_found(name, db))
    _changed(db)
    return updated


def delete_limit(name: str, *, db: LimitsDB | None = None) -> None:
    name = sql.check_name(name)
    db = _db(db)
    if not db.run(lambda conn: sql.delete(conn, name)):
        raise KeyError(_not_found(name, db))
    _changed(db)


def reset_limit(name: str, *, db: LimitsDB | None = None) -> None:
    """Free every slot of the limit (the holders that still run go on unlimited)."""
    name = sql.check_name(name)
    db = _db(db)
    now = get_clock().time()
    if not db.run(lambda conn: sql.reset(conn, name, now)):
        raise KeyError(_not_found(name, db))


def read_limit(name: str, *, db: LimitsDB | None = None) -> tuple[sql.Limit, list[sql.Slot]]:
    """The limit and the slots held now (who holds them, until when)."""
    name = sql.check_name(name)
    db = _db(db)
    now = get_clock().time()
    found = db.run(lambda conn: (sql.read(conn, name, now), sql.slots_of(conn, name, now)))
    if found[0] is None:
        raise KeyError(_not_found(name, db))
    return found[0], found[1]


def read_limits(*, tags: bool | None = None, db: LimitsDB | None = None) -> list[sql.Limit]:
    db = _db(db)
    now = get_clock().time()
    return db.run(lambda conn: sql.read_all(conn, now, tags))


def _not_found(name: str, db: LimitsDB) -> str:
    kind = f"tag concurrency limit for tag {name[len(sql.TAG_PREFIX):]!r}" if name.startswith(sql.TAG_PREFIX) \
        else f"concurrency limit {name!r}"
    return f"No {kind} in {db.label}: `asyncflow gcl ls` and `asyncflow concurrency-limit ls` list the limits."
