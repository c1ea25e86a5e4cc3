"""The concurrency-limit schemas of Prefect's client (`prefect.client.schemas.actions`, `.objects`,
`.responses`), as attrs classes: made with keyword arguments, every field checked when the object is
made (and when a field is set), so bad input fails where it is written, not later in the store."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import attrs

from .._limits import sql


def _name(value: Any) -> str:
    return sql.check_name(value)


def _optional_name(value: Any) -> str | None:
    return None if value is None else sql.check_name(value)


def _tag(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a tag must be a string; got {type(value).__name__} {value!r}.")
    if not value.strip() or value != value.strip():
        raise ValueError(f"tag {value!r} is empty or has leading/trailing spaces: give the tag as the tasks have it.")
    return value


def _limit(value: Any) -> int:
    return sql.check_limit(value)


def _optional_limit(value: Any) -> int | None:
    return None if value is None else sql.check_limit(value)


def _decay(value: Any) -> float:
    return sql.check_decay(value)


def _optional_decay(value: Any) -> float | None:
    return None if value is None else sql.check_decay(value)


def _active(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"active must be True or False; got {type(value).__name__} {value!r}.")
    return value


def _optional_active(value: Any) -> bool | None:
    return None if value is None else _active(value)


def _active_slots(value: Any) -> int | None:
    """Slots are taken by their holders (each a lease), never set by hand: only 0 (free them all) is a
    value asyncflow can honour."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
        return value
    raise ValueError(f"active_slots can only be 0 (free every slot, as `asyncflow gcl ... reset` does) or left "
                     f"out; got {value!r}. Slots are taken by the code that holds them (concurrency(), tag-limited "
                     f"task runs), so there is no holder to give {value!r} slots to.")


@attrs.define(kw_only=True)
class ConcurrencyLimitCreate:
    """A tag concurrency limit to create (Prefect's `prefect.client.schemas.actions.ConcurrencyLimitCreate`)."""

    tag: str = attrs.field(converter=_tag)
    concurrency_limit: int = attrs.field(converter=_limit)


@attrs.define(kw_only=True)
class GlobalConcurrencyLimitCreate:
    """A global concurrency limit to create: `client.create_global_concurrency_limit(
    GlobalConcurrencyLimitCreate(name="db", limit=5, slot_decay_per_second=0.0, active=True))`."""

    name: str = attrs.field(converter=_name)
    limit: int = attrs.field(converter=_limit)
    active: bool = attrs.field(default=True, converter=_active)
    active_slots: int = attrs.field(default=0, converter=_active_slots)
    slot_decay_per_second: float = attrs.field(default=0.0, converter=_decay)


@attrs.define(kw_only=True)
class GlobalConcurrencyLimitUpdate:
    """What to change in a global concurrency limit (None: keep it): `client.update_global_concurrency_limit(
    "db", GlobalConcurrencyLimitUpdate(limit=10))`. `name` renames it; `active_slots=0` frees every slot."""

    name: str | None = attrs.field(default=None, converter=_optional_name)
    limit: int | None = attrs.field(default=None, converter=_optional_limit)
    active: bool | None = attrs.field(default=None, converter=_optional_active)
    active_slots: int | None = attrs.field(default=None, converter=_active_slots)
    slot_decay_per_second: float | None = attrs.field(default=None, converter=_optional_decay)


@attrs.define(kw_only=True)
class ConcurrencyLimit:
    """A tag concurrency limit as read (Prefect's `prefect.client.schemas.objects.ConcurrencyLimit`):
    `active_slots` lists the ids of the task runs holding a slot now."""

    id: uuid.UUID
    created: dt.datetime | None = None
    updated: dt.datetime | None = None
    tag: str
    concurrency_limit: int
    active_slots: list[uuid.UUID] = attrs.field(factory=list)


@attrs.define(kw_only=True)
class GlobalConcurrencyLimitResponse:
    """A concurrency limit as read (Prefect's `prefect.client.schemas.responses.GlobalConcurrencyLimitResponse`):
    `active_slots` counts the slots taken now (held, or taken by `rate_limit` and not yet decayed)."""

    id: uuid.UUID
    created: dt.datetime | None = None
    updated: dt.datetime | None = None
    active: bool = True
    name: str
    limit: int
    active_slots: int
    slot_decay_per_second: float = 0.0
