"""Creating, changing, reading and deleting limits (what the CLI and the client call). Every function
takes the limit tables to use (`db`; default: the process's store's) and checks its arguments first."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from .._clock import get_clock
from .._store.base import ObjectNotFound
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


def set_limit(name: str, limit: int, *, db: LimitsDB | None = None) -> sql.Limit:
    """Create the limit, or give the one of this name `limit` slots (Prefect's tag limits: a create is
    an upsert)."""
    name, limit = sql.check_name(name), sql.check_limit(limit)
    db = _db(db)
    now = get_clock().time()

    def upsert(conn: Any) -> sql.Limit:
        changed = sql.update(conn, name, now, limit=limit)
        return changed if changed is not None else sql.create(conn, name, limit, 0.0, True, now)

    result = db.run(upsert)
    _changed(db)
    return result


def update_limit(name: str, *, limit: int | None = None, slot_decay_per_second: float | None = None,
                 active: bool | None = None, new_name: str | None = None, db: LimitsDB | None = None) -> sql.Limit:
    name = sql.check_name(name)
    limit = None if limit is None else sql.check_limit(limit)
    decay = None if slot_decay_per_second is None else sql.check_decay(slot_decay_per_second)
    new_name = None if new_name is None else sql.check_name(new_name)
    db = _db(db)
    now = get_clock().time()
    updated = db.run(lambda conn: sql.update(conn, name, now, limit=limit, decay=decay, active=active,
                                             new_name=new_name))
    if updated is None:
        raise ObjectNotFound(_not_found(name, db))
    _changed(db)
    return updated


def delete_limit(name: str, *, db: LimitsDB | None = None) -> None:
    name = sql.check_name(name)
    db = _db(db)
    if not db.run(lambda conn: sql.delete(conn, name)):
        raise ObjectNotFound(_not_found(name, db))
    _changed(db)


def reset_limit(name: str, *, keep: Sequence[str] = (), db: LimitsDB | None = None) -> None:
    """Free every slot of the limit (the holders that still run go on unlimited), but those of the
    holders named in `keep` (such as "task_run:<id>")."""
    name = sql.check_name(name)
    db = _db(db)
    now = get_clock().time()
    if not db.run(lambda conn: sql.reset(conn, name, now, tuple(keep))):
        raise ObjectNotFound(_not_found(name, db))


def read_limit(name: str, *, db: LimitsDB | None = None) -> tuple[sql.Limit, list[sql.Slot]]:
    """The limit and the slots held now (who holds them, until when)."""
    name = sql.check_name(name)
    db = _db(db)
    now = get_clock().time()
    found = db.run(lambda conn: (sql.read(conn, name, now), sql.slots_of(conn, name, now)))
    if found[0] is None:
        raise ObjectNotFound(_not_found(name, db))
    return found[0], found[1]


def read_limits(*, tags: bool | None = None, limit: int | None = None, offset: int = 0,
                db: LimitsDB | None = None) -> list[sql.Limit]:
    """The limits by name (`tags`: True only tag limits, False only global ones); `limit` of them
    after the first `offset`, if given."""
    db = _db(db)
    now = get_clock().time()
    return db.run(lambda conn: sql.read_all(conn, now, tags, limit, offset))


def resolve(name_or_id: str, *, db: LimitsDB | None = None) -> str:
    """The name of the limit named `name_or_id`, else of the limit whose id it is (Prefect's client
    takes either); ObjectNotFound if neither."""
    name = sql.check_name(name_or_id)
    db = _db(db)
    now = get_clock().time()
    try:
        limit_id = uuid.UUID(name)
    except ValueError:
        return name
    found = db.run(lambda conn: sql.read(conn, name, now) or sql.find_by_id(conn, limit_id, now))
    if found is None:
        raise ObjectNotFound(f"No concurrency limit named {name!r} or with that id in {db.label}: `asyncflow gcl "
                             f"ls` lists the limits.")
    return found.name


def _not_found(name: str, db: LimitsDB) -> str:
    kind = f"tag concurrency limit for tag {name[len(sql.TAG_PREFIX):]!r}" if name.startswith(sql.TAG_PREFIX) \
        else f"concurrency limit {name!r}"
    return f"No {kind} in {db.label}: `asyncflow gcl ls` and `asyncflow concurrency-limit ls` list the limits."
