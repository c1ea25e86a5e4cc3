"""Query strings into the read API's arguments; anything malformed is a `BadParameter` (a 400 that
names the parameter), never a 500 and never a silently empty page."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from .._store.reads import RunFilter, levels_from

MAX_PAGE = 500  # the largest page a request may ask for


class BadParameter(ValueError):
    """A query parameter that cannot be used: `parameter` names it, the message says what it takes."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class Query:
    """The query string of one request (a Starlette QueryParams or a plain mapping of lists)."""

    def __init__(self, params: Any) -> None:
        if hasattr(params, "getlist"):
            self._lists = {key: params.getlist(key) for key in params}
        else:
            self._lists = {key: list(value) if isinstance(value, (list, tuple)) else [value]
                           for key, value in dict(params).items()}

    def all(self, name: str) -> list[str]:
        """Every non-blank value of a repeatable parameter (`?state=Failed&state=Crashed`); a value may
        also hold several, comma-separated (`?state=Failed,Crashed`)."""
        out: list[str] = []
        for value in self._lists.get(name, ()):
            out += [part.strip() for part in value.split(",") if part.strip()]
        return out

    def one(self, name: str) -> str | None:
        """The value of a parameter given at most once; blank is as if not given (an empty form field)."""
        values = [v for v in self._lists.get(name, ()) if v.strip()]
        if len(values) > 1:
            raise BadParameter(name, f"{name} is given {len(values)} times: give it once.")
        return values[0].strip() if values else None

    def items(self) -> Mapping[str, list[str]]:
        return self._lists


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(name: str, text: str | None, now: float | None = None) -> float | None:
    """A point in time: an ISO 8601 time with a timezone (`2026-12-01T10:00:00+00:00`, `...Z`), a
    date (`2026-12-01`, midnight UTC), a Unix timestamp, or a duration back from now (`90m`, `24h`,
    `7d`)."""
    if text is None:
        return None
    match = _RELATIVE.match(text.lower())
    if match:
        return (time.time() if now is None else now) - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise BadParameter(name, f"{name} must be a finite timestamp; got {text!r}.")
        return seconds
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadParameter(name, f"{name} {text!r} is not a time: give an ISO 8601 time with a timezone "
                                 f"(2026-12-01T10:00:00Z), a date (2026-12-01), a Unix timestamp, or a "
                                 f"duration back from now (90m, 24h, 7d).") from None
    if moment.tzinfo is None:
        if len(text) == 10:  # a date alone: midnight UTC
            moment = moment.replace(tzinfo=dt.timezone.utc)
        else:
            raise BadParameter(name, f"{name} {text!r} has no timezone: add one (Z or +02:00).")
    return moment.timestamp()


def run_filter(query: Query, *, task_runs: bool = False) -> RunFilter:
    """`flow`, `task` (task runs), `state`, `tag` (repeatable), `since`, `until`, `search`, and `parent`
    (flow runs: subflows of; task runs: `flow_run_id`)."""
    fields: dict[str, Any] = {}
    names = {"flow": "flow_names", "state": "states", "tag": "tags"}
    if task_runs:
        names["task"] = "task_names"
    elif query.all("task"):
        raise BadParameter("task", "task filters task runs: use it on /api/v1/task-runs.")
    for param, field in names.items():
        values = query.all(param)
        if values:
            fields[field] = values
    for param in ("since", "until"):
        value = parse_time(param, query.one(param))
        if value is not None:
            fields[param] = value
    search = query.one("search")
    if search is not None:
        fields["search"] = search
    parent_param = "flow_run_id" if task_runs else "parent"
    parent = query.one(parent_param)
    if parent is not None:
        fields["parent_flow_run_id"] = run_id(parent_param, parent)
    params = {"flow_names": "flow", "task_names": "task", "states": "state", "tags": "tag", "since": "since",
              "until": "until", "search": "search", "parent_flow_run_id": parent_param}
    for field, value in fields.items():  # one at a time, so the error names its parameter
        try:
            RunFilter(**{field: value})
        except (TypeError, ValueError) as exc:
            raise BadParameter(params[field], str(exc).replace("RunFilter ", "")) from None
    try:
        return RunFilter(**fields)
    except (TypeError, ValueError) as exc:  # since after until
        raise BadParameter("until", str(exc).replace("RunFilter ", "")) from None


def run_id(name: str, text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise BadParameter(name, f"{name} {text!r} is not a run id: expected a UUID such as "
                                 f"'0b8e2f4c-5d1a-4c3e-9f7a-2b6d8e1c4a90'.") from None


def limit(query: Query, default: int, name: str = "limit") -> int:
    text = query.one(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PAGE:
        raise BadParameter(name, f"{name} must be a whole number from 1 to {MAX_PAGE}; got {text!r}.")
    return value


def sequence(query: Query, name: str) -> int | None:
    """A feed position (`since`, `after`): a whole number >= 0."""
    text = query.one(name)
    if text is None:
        return None
    if not text.isdigit():
        raise BadParameter(name, f"{name} must be a sequence number (a whole number >= 0); got {text!r}.")
    return int(text)


def level(query: Query, name: str = "level") -> str | None:
    text = query.one(name)
    if text is None:
        return None
    try:
        levels_from(int(text) if text.isdigit() else text)
    except (TypeError, ValueError):
        raise BadParameter(name, f"{name} {text!r} is not a log level: use DEBUG, INFO, WARNING, ERROR or "
                                 f"CRITICAL (or a number).") from None
    return text.upper() if not text.isdigit() else text


def order(query: Query, default_newest: bool) -> bool:
    text = query.one("order")
    if text is None:
        return default_newest
    if text.lower() not in ("newest", "oldest"):
        raise BadParameter("order", f"order must be 'newest' or 'oldest'; got {text!r}.")
    return text.lower() == "newest"


def cursor(query: Query, name: str = "cursor") -> str | None:
    """Checked by the store against its query (a damaged or foreign cursor is a ValueError there):
    here only its shape, so an absurd value fails before any read."""
    text = query.one(name)
    if text is not None and (len(text) > 200 or not re.fullmatch(r"[A-Za-z0-9_=-]+", text)):
        raise BadParameter(name, f"{name} is damaged: pass a next_cursor exactly as a page gave it.")
    return text


def choice(query: Query, name: str, choices: tuple[str, ...], default: str) -> str:
    text = query.one(name)
    if text is None:
        return default
    if text.lower() not in choices:
        raise BadParameter(name, f"{name} must be one of {', '.join(choices)}; got {text!r}.")
    return text.lower()


def seconds(query: Query, name: str) -> float | None:
    text = query.one(name)
    if text is None:
        return None
    match = _RELATIVE.match(text.lower())
    if match:
        value = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise BadParameter(name, f"{name} must be a positive number of seconds or a duration (5m, 1h); got {text!r}.")
    return value


def check_known(query: Query, known: tuple[str, ...]) -> None:
    """A misspelt parameter (`?stat=Failed`) is a 400, not a filter silently left out."""
    for name in query.items():
        if name not in known:
            raise BadParameter(name, f"unknown parameter {name!r}: this endpoint takes "
                                     f"{', '.join(sorted(known)) or 'no parameters'}.")
