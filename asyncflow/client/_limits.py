"""Managing concurrency limits through the client, as Prefect 3's client does it (its
`ConcurrencyLimitClient` / `ConcurrencyLimitAsyncClient` methods, names, arguments and errors), over the
limit tables of the client's store (SQLite or PostgreSQL; docs/concurrency-limits.md).

    async with get_client() as client:
        await client.create_concurrency_limit(tag="io", concurrency_limit=2)
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="db", limit=5))

A missing limit raises `ObjectNotFound`, creating a global limit that exists `ObjectAlreadyExists`
(both in `asyncflow.exceptions`). Where Prefect returns the server's HTTP response (update, delete of a
global limit) there is none: update returns the limit as changed, delete None. Arguments are checked
before anything is done (on the event loop, for the async client); the work runs in a worker thread."""

from __future__ import annotations

import datetime as dt
import functools
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._limits import manage, sql
from .._limits.db import LimitsDB, current_or_raise
from .._store import ObjectNotFound, RunStore
from ._schemas import (
    ConcurrencyLimit,
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitResponse,
    GlobalConcurrencyLimitUpdate,
)
from ._schemas import _tag as _check_tag

T = TypeVar("T")
TASK_RUN = "task_run:"  # how a task run's slot names its holder (the engine's tag limits)


# -- checks (before any work, on the caller's thread) ---------------------------------------------------------
def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be an int >= 0; got {value!r}.")
    return value


def _schema(value: Any, kind: type, call: str) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"{call}() takes a {kind.__name__} (from asyncflow.client.schemas.actions import "
                        f"{kind.__name__}); got {type(value).__name__}.")


def _overrides(slot_override: Any) -> tuple[str, ...]:
    """The holders whose slots a reset keeps: "task_run:<id>" for each task run id given."""
    if slot_override is None:
        return ()
    if isinstance(slot_override, (str, bytes)) or not isinstance(slot_override, (list, tuple, set)):
        raise TypeError(f"slot_override must be a list of task run ids (UUIDs or strings); got "
                        f"{type(slot_override).__name__}.")
    holders = []
    for item in slot_override:
        try:
            holders.append(TASK_RUN + str(item if isinstance(item, uuid.UUID) else uuid.UUID(str(item))))
        except ValueError:
            raise ValueError(f"slot_override must be a list of task run ids; {item!r} is not one (a UUID such "
                             f"as {str(uuid.uuid4())!r}).") from None
    return tuple(holders)


# -- what a stored limit looks like to the client ---------------------------------------------------------
def _time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


def _slots(active_slots: float) -> int:
    """Slots taken, as Prefect's whole number: a `rate_limit` slot partly decayed is still taken."""
    return max(0, math.ceil(active_slots - 1e-9))


def _global(limit: sql.Limit) -> GlobalConcurrencyLimitResponse:
    return GlobalConcurrencyLimitResponse(id=limit.id, created=_time(limit.created), updated=_time(limit.updated),
                                          active=limit.active, name=limit.name, limit=limit.limit,
                                          active_slots=_slots(limit.active_slots),
                                          slot_decay_per_second=limit.slot_decay_per_second)


def _task_run_ids(slots: Sequence[sql.Slot]) -> list[uuid.UUID]:
    ids = []
    for slot in slots:
        if slot.holder is not None and slot.holder.startswith(TASK_RUN):
            try:
                ids.append(uuid.UUID(slot.holder[len(TASK_RUN):]))
            except ValueError:
                continue  # (a holder named by hand, not a task run)
    return ids


def _tag_limit(limit: sql.Limit, slots: Sequence[sql.Slot]) -> ConcurrencyLimit:
    return ConcurrencyLimit(id=limit.id, created=_time(limit.created), updated=_time(limit.updated),
                            tag=limit.tag or "", concurrency_limit=limit.limit, active_slots=_task_run_ids(slots))


# -- the work, as plain blocking calls ----------------------------------------------------------------------
class _LimitOps:
    """What both clients do, blocking; the client classes check arguments first, then call these."""

    @property
    def store(self) -> RunStore:  # (the client's store: _Reads.store)
        raise NotImplementedError

    def _limits(self) -> LimitsDB:
        return current_or_raise(self.store)

    def _create_tag(self, tag: str, concurrency_limit: int) -> uuid.UUID:
        return manage.set_limit(sql.TAG_PREFIX + tag, concurrency_limit, db=self._limits()).id

    def _read_tag(self, tag: str) -> ConcurrencyLimit:
        limit, slots = manage.read_limit(sql.TAG_PREFIX + tag, db=self._limits())
        return _tag_limit(limit, slots)

    def _read_tags(self, limit: int, offset: int) -> list[ConcurrencyLimit]:
        db = self._limits()
        return [_tag_limit(found, manage.read_limit(found.name, db=db)[1])
                for found in manage.read_limits(tags=True, limit=limit, offset=offset, db=db)]

    def _reset_tag(self, tag: str, keep: tuple[str, ...]) -> None:
        manage.reset_limit(sql.TAG_PREFIX + tag, keep=keep, db=self._limits())

    def _delete_tag(self, tag: str) -> None:
        manage.delete_limit(sql.TAG_PREFIX + tag, db=self._limits())

    def _create_global(self, create: GlobalConcurrencyLimitCreate) -> uuid.UUID:
        return manage.create_limit(create.name, create.limit, slot_decay_per_second=create.slot_decay_per_second,
                                   active=create.active, db=self._limits()).id

    def _update_global(self, name: str, update: GlobalConcurrencyLimitUpdate) -> GlobalConcurrencyLimitResponse:
        db = self._limits()
        name = manage.resolve(name, db=db)
        changed = manage.update_limit(name, limit=update.limit, slot_decay_per_second=update.slot_decay_per_second,
                                      active=update.active, new_name=update.name, db=db)
        if update.active_slots == 0:
            manage.reset_limit(changed.name, db=db)
        return _global(manage.read_limit(changed.name, db=db)[0])

    def _delete_global(self, name: str) -> None:
        db = self._limits()
        manage.delete_limit(manage.resolve(name, db=db), db=db)

    def _read_global(self, name: str) -> GlobalConcurrencyLimitResponse:
        db = self._limits()
        return _global(manage.read_limit(manage.resolve(name, db=db), db=db)[0])

    def _upsert_global(self, name: str, limit: int, slot_decay_per_second: float | None) -> None:
        """As Prefect: create it, or change what differs (not atomic: two upserts may race)."""
        try:
            existing = self._read_global(name)
        except ObjectNotFound:
            self._create_global(GlobalConcurrencyLimitCreate(
                name=name, limit=limit, slot_decay_per_second=slot_decay_per_second or 0.0))
            return
        if existing.limit != limit or (slot_decay_per_second is not None
                                       and existing.slot_decay_per_second != slot_decay_per_second):
            self._update_global(name, GlobalConcurrencyLimitUpdate(limit=limit,
                                                                   slot_decay_per_second=slot_decay_per_second))

    def _read_globals(self, limit: int, offset: int) -> list[GlobalConcurrencyLimitResponse]:
        return [_global(found) for found in manage.read_limits(limit=limit, offset=offset, db=self._limits())]


def _check_upsert(name: Any, limit: Any, slot_decay_per_second: Any) -> None:
    sql.check_name(name)
    sql.check_limit(limit)
    if slot_decay_per_second is not None:
        sql.check_decay(slot_decay_per_second)


class AsyncLimitMethods(_LimitOps):
    """The async client's concurrency-limit methods (Prefect's `ConcurrencyLimitAsyncClient`)."""

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    async def create_concurrency_limit(self, tag: str, concurrency_limit: int) -> uuid.UUID:
        """Limit how many task runs tagged `tag` run at once; a limit on that tag is given the new
        number instead (as Prefect). Returns the limit's id."""
        _check_tag(tag)
        sql.check_limit(concurrency_limit)
        return await self._in_thread(self._create_tag, tag, concurrency_limit)

    async def read_concurrency_limit_by_tag(self, tag: str) -> ConcurrencyLimit:
        """The tag's limit, with the ids of the task runs holding its slots now."""
        _check_tag(tag)
        return await self._in_thread(self._read_tag, tag)

    async def read_concurrency_limits(self, limit: int, offset: int) -> list[ConcurrencyLimit]:
        """Tag limits by tag: `limit` of them after the first `offset`."""
        return await self._in_thread(self._read_tags, _count(limit, "limit"), _count(offset, "offset"))

    async def reset_concurrency_limit_by_tag(self, tag: str,
                                             slot_override: list[uuid.UUID | str] | None = None) -> None:
        """Free every slot of the tag's limit but those held by the task runs in `slot_override`."""
        _check_tag(tag)
        keep = _overrides(slot_override)
        await self._in_thread(self._reset_tag, tag, keep)

    async def delete_concurrency_limit_by_tag(self, tag: str) -> None:
        _check_tag(tag)
        await self._in_thread(self._delete_tag, tag)

    async def create_global_concurrency_limit(self, concurrency_limit: GlobalConcurrencyLimitCreate) -> uuid.UUID:
        """Create a limit for `concurrency()` / `rate_limit()`; `ObjectAlreadyExists` if the name is taken."""
        _schema(concurrency_limit, GlobalConcurrencyLimitCreate, "create_global_concurrency_limit")
        return await self._in_thread(self._create_global, concurrency_limit)

    async def update_global_concurrency_limit(self, name: str, concurrency_limit: GlobalConcurrencyLimitUpdate
                                              ) -> GlobalConcurrencyLimitResponse:
        """Change the limit named `name` (or with this id): the fields given; returns it as changed."""
        sql.check_name(name)
        _schema(concurrency_limit, GlobalConcurrencyLimitUpdate, "update_global_concurrency_limit")
        return await self._in_thread(self._update_global, name, concurrency_limit)

    async def delete_global_concurrency_limit_by_name(self, name: str) -> None:
        sql.check_name(name)
        await self._in_thread(self._delete_global, name)

    async def read_global_concurrency_limit_by_name(self, name: str) -> GlobalConcurrencyLimitResponse:
        sql.check_name(name)
        return await self._in_thread(self._read_global, name)

    async def upsert_global_concurrency_limit_by_name(self, name: str, limit: int,
                                                      slot_decay_per_second: float | None = None) -> None:
        """Create the limit, or change its limit (and decay, if given) where they differ."""
        _check_upsert(name, limit, slot_decay_per_second)
        await self._in_thread(self._upsert_global, name, limit, slot_decay_per_second)

    async def read_global_concurrency_limits(self, limit: int = 10,
                                             offset: int = 0) -> list[GlobalConcurrencyLimitResponse]:
        """Every limit by name (tag limits too, named "tag:<tag>"): `limit` of them after `offset`."""
        return await self._in_thread(self._read_globals, _count(limit, "limit"), _count(offset, "offset"))


class SyncLimitMethods(_LimitOps):
    """The sync client's concurrency-limit methods (Prefect's `ConcurrencyLimitClient`)."""

    def create_concurrency_limit(self, tag: str, concurrency_limit: int) -> uuid.UUID:
        """Limit how many task runs tagged `tag` run at once; a limit on that tag is given the new
        number instead (as Prefect). Returns the limit's id."""
        _check_tag(tag)
        sql.check_limit(concurrency_limit)
        return self._create_tag(tag, concurrency_limit)

    def read_concurrency_limit_by_tag(self, tag: str) -> ConcurrencyLimit:
        """The tag's limit, with the ids of the task runs holding its slots now."""
        _check_tag(tag)
        return self._read_tag(tag)

    def read_concurrency_limits(self, limit: int, offset: int) -> list[ConcurrencyLimit]:
        """Tag limits by tag: `limit` of them after the first `offset`."""
        return self._read_tags(_count(limit, "limit"), _count(offset, "offset"))

    def reset_concurrency_limit_by_tag(self, tag: str, slot_override: list[uuid.UUID | str] | None = None) -> None:
        """Free every slot of the tag's limit but those held by the task runs in `slot_override`."""
        _check_tag(tag)
        self._reset_tag(tag, _overrides(slot_override))

    def delete_concurrency_limit_by_tag(self, tag: str) -> None:
        _check_tag(tag)
        self._delete_tag(tag)

    def create_global_concurrency_limit(self, concurrency_limit: GlobalConcurrencyLimitCreate) -> uuid.UUID:
        """Create a limit for `concurrency()` / `rate_limit()`; `ObjectAlreadyExists` if the name is taken."""
        _schema(concurrency_limit, GlobalConcurrencyLimitCreate, "create_global_concurrency_limit")
        return self._create_global(concurrency_limit)

    def update_global_concurrency_limit(self, name: str, concurrency_limit: GlobalConcurrencyLimitUpdate
                                        ) -> GlobalConcurrencyLimitResponse:
        """Change the limit named `name` (or with this id): the fields given; returns it as changed."""
        sql.check_name(name)
        _schema(concurrency_limit, GlobalConcurrencyLimitUpdate, "update_global_concurrency_limit")
        return self._update_global(name, concurrency_limit)

    def delete_global_concurrency_limit_by_name(self, name: str) -> None:
        sql.check_name(name)
        self._delete_global(name)

    def read_global_concurrency_limit_by_name(self, name: str) -> GlobalConcurrencyLimitResponse:
        sql.check_name(name)
        return self._read_global(name)

    def upsert_global_concurrency_limit_by_name(self, name: str, limit: int,
                                                slot_decay_per_second: float | None = None) -> None:
        """Create the limit, or change its limit (and decay, if given) where they differ."""
        _check_upsert(name, limit, slot_decay_per_second)
        self._upsert_global(name, limit, slot_decay_per_second)

    def read_global_concurrency_limits(self, limit: int = 10, offset: int = 0) -> list[GlobalConcurrencyLimitResponse]:
        """Every limit by name (tag limits too, named "tag:<tag>"): `limit` of them after `offset`."""
        return self._read_globals(_count(limit, "limit"), _count(offset, "offset"))
