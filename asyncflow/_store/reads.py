"""The read API that the CLI, the client and the web UI stand on, the same for every store.

- `RunFilter`: which runs (flows, states, tags, a created-time range, a parent flow run, text in names),
  validated when it is built, so a bad filter fails where it is written, naming the field.
- `Page`: a page of runs and the cursor of the next one. Paging is keyset paging on (created, ref):
  a run's `created` (when it was recorded) and its `ref` (the store's increasing number for it) never
  change, so paging through runs while new ones arrive returns each run once, in order (never OFFSET).
  Cursors are opaque; one from another query, or damaged, is a `ValueError`.
- `Change`: one state a run entered, with the sequence number the store gave it; reading changes
  `since` the last number seen is a feed that returns every state once, in the order stored.
- `Timeline`: a flow run with every state of its own, of its task runs and of its subflows (nested).
- `StateCount`: flow runs by state in buckets of creation time (a chart).

The stores implement the reads (`read_flow_runs_page`, `read_task_runs_page`, `read_changes`,
`read_logs_since`, `read_timeline`, `count_flow_runs_by_state`); this module holds what they share, so
that they agree on semantics and order. Text is matched without regard to ASCII case (SQLite's `lower`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import attrs

from .._runs import FlowRun, TaskRun
from .._states import State, StateType
from .base import as_uuid, state_filter

T = TypeVar("T")

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lower case as SQLite's lower() does (ASCII letters only), so every store matches alike."""
    return text.translate(_ASCII_LOWER)


# -- the filter -----------------------------------------------------------------------------------
def _names(field: str, value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    try:
        names = list(values)
    except TypeError:
        raise TypeError(f"RunFilter {field} must be a string or a list of strings; got "
                        f"{type(value).__name__}.") from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"RunFilter {field} must be strings; got {name!r} ({type(name).__name__}).")
        if not name.strip():
            raise ValueError(f"RunFilter {field} holds an empty name: give names such as 'etl'.")
    if not names:
        raise ValueError(f"RunFilter {field} is an empty list: give at least one, or None for any.")
    return frozenset(names)


def _flow_names(value: Any) -> frozenset[str] | None:
    return _names("flow_names", value)


def _task_names(value: Any) -> frozenset[str] | None:
    return _names("task_names", value)


def _tags(value: Any) -> frozenset[str] | None:
    return _names("tags", value)


def _states(value: Any) -> frozenset[str] | None:
    if isinstance(value, (bytes, Mapping)):
        raise TypeError(f"RunFilter states must be state names or types (such as 'Completed', 'FAILED') or a list "
                        f"of them; got {type(value).__name__}.")
    try:
        wanted = state_filter(value)
    except TypeError:
        raise TypeError(f"RunFilter states must be state names or types (such as 'Completed', 'FAILED') or a list "
                        f"of them; got {value!r}.") from None
    except ValueError:
        raise ValueError("RunFilter states is an empty list: give at least one state, or None for any.") from None
    if wanted is not None and "" in wanted:
        raise ValueError("RunFilter states holds an empty name: give names such as 'Completed' or types such "
                         "as 'FAILED'.")
    return wanted


def _time(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"RunFilter {field} is a naive datetime: give it a timezone "
                             f"(datetime.now(timezone.utc)), or a Unix timestamp.")
        try:
            return value.timestamp()
        except (OverflowError, ValueError, OSError):
            raise ValueError(f"RunFilter {field} {value!r} is out of range for a timestamp.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"RunFilter {field} must be a datetime with a timezone or a Unix timestamp (seconds); "
                        f"got {type(value).__name__}.")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"RunFilter {field} must be a finite timestamp; got {value!r}.")
    return seconds


def _since(value: Any) -> float | None:
    return _time("since", value)


def _until(value: Any) -> float | None:
    return _time("until", value)


def _parent(value: Any) -> uuid.UUID | None:
    return None if value is None else as_uuid(value, "RunFilter parent_flow_run_id")


def _search(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"RunFilter search must be a string; got {type(value).__name__}.")
    return ascii_lower(value.strip()) or None  # an empty search box searches nothing out


@attrs.frozen(slots=True, kw_only=True)
class RunFilter:
    """Which runs to read; every field narrows (all must hold), None means any.

    - `flow_names`: a flow name or names (exact). For task runs: those of runs of these flows.
    - `task_names`: a task name or names (exact); task runs only.
    - `states`: state names ("Cached", "AwaitingRetry") or types ("FAILED"), any case.
    - `tags`: a tag or tags; a run must carry all of them.
    - `since` / `until`: created at or after `since`, before `until` (timezone-aware datetimes or
      Unix timestamps). `created` is when the run was recorded (its first state).
    - `parent_flow_run_id`: flow runs: the subflows of that flow run; task runs: its task runs.
    - `search`: text in the run's name or its flow's (task's) name, ignoring ASCII case.
    """

    flow_names: frozenset[str] | None = attrs.field(default=None, converter=_flow_names)
    task_names: frozenset[str] | None = attrs.field(default=None, converter=_task_names)
    states: frozenset[str] | None = attrs.field(default=None, converter=_states)
    tags: frozenset[str] | None = attrs.field(default=None, converter=_tags)
    since: float | None = attrs.field(default=None, converter=_since)
    until: float | None = attrs.field(default=None, converter=_until)
    parent_flow_run_id: uuid.UUID | None = attrs.field(default=None, converter=_parent)
    search: str | None = attrs.field(default=None, converter=_search)

    def __attrs_post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"RunFilter since ({_iso(self.since)}) is after until ({_iso(self.until)}): "
                             f"the range holds no time.")

    def key(self) -> dict[str, Any]:
        """A canonical, JSON-able form (for cursors and the UI's query strings)."""
        out: dict[str, Any] = {}
        for field in attrs.fields(RunFilter):
            value = getattr(self, field.name)
            if value is None:
                continue
            out[field.name] = sorted(value) if isinstance(value, frozenset) else (
                str(value) if isinstance(value, uuid.UUID) else value)
        return out


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat()


def as_filter(value: Any) -> RunFilter:
    if value is None:
        return _ANY
    if not isinstance(value, RunFilter):
        raise TypeError(f"filter must be a RunFilter (asyncflow.client.RunFilter); got {type(value).__name__}.")
    return value


_ANY = RunFilter()


def _text_matches(needle: str | None, *names: str | None) -> bool:
    return needle is None or any(name is not None and needle in ascii_lower(name) for name in names)


def _common_matches(f: RunFilter, run: FlowRun | TaskRun, created: float) -> bool:
    if f.since is not None and created < f.since:
        return False
    if f.until is not None and created >= f.until:
        return False
    if f.states is not None:
        state = run.state
        if state.name.lower() not in f.states and state.type.value.lower() not in f.states:
            return False
    return f.tags is None or f.tags.issubset(run.tags)


def flow_run_matches(f: RunFilter, run: FlowRun, created: float) -> bool:
    """What the SQL of every store does, in Python (the memory store)."""
    return ((f.flow_names is None or run.flow_name in f.flow_names)
            and (f.parent_flow_run_id is None or run.parent_flow_run_id == f.parent_flow_run_id)
            and _common_matches(f, run, created) and _text_matches(f.search, run.name, run.flow_name))


def task_run_matches(f: RunFilter, run: TaskRun, created: float, flow_name_of: Callable[[Any], str | None]) -> bool:
    return ((f.task_names is None or run.task_name in f.task_names)
            and (f.parent_flow_run_id is None or run.flow_run_id == f.parent_flow_run_id)
            and _common_matches(f, run, created) and _text_matches(f.search, run.name, run.task_name)
            and (f.flow_names is None or flow_name_of(run.flow_run_id) in f.flow_names))


def check_flow_run_filter(f: RunFilter) -> RunFilter:
    if f.task_names is not None:
        raise ValueError("RunFilter task_names filters task runs, not flow runs: leave it out of a flow run read.")
    return f


# -- pages and cursors ----------------------------------------------------------------------------
@attrs.frozen(slots=True)
class Page(Generic[T]):
    """Some runs, and `next_cursor` to read the next page (None: this is the last page)."""

    items: tuple[T, ...]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]


def check_page_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1 (a page size) or None; got {limit!r}.")
    return limit


def query_key(kind: str, f: RunFilter, newest_first: Any) -> str:
    """What a cursor belongs to: the kind of run, the filter and the order."""
    if not isinstance(newest_first, bool):
        raise TypeError(f"newest_first must be True or False; got {newest_first!r}.")
    text = json.dumps([kind, f.key(), newest_first], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _checksum(payload: str) -> str:
    return hashlib.blake2b(payload.encode(), digest_size=6, person=b"af-cursor").hexdigest()


def encode_cursor(key: str, created: float, ref: int) -> str:
    payload = f"1:{key}:{float(created)!r}:{int(ref)}"
    return base64.urlsafe_b64encode(f"{payload}:{_checksum(payload)}".encode()).decode().rstrip("=")


def decode_cursor(cursor: Any, key: str) -> tuple[float, int] | None:
    """(created, ref) of the last run of the previous page; None for the first page."""
    if cursor is None:
        return None
    if not isinstance(cursor, str):
        raise TypeError(f"cursor must be a string (a page's next_cursor) or None; got {type(cursor).__name__}.")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        payload, checksum = text.rsplit(":", 1)
        if checksum != _checksum(payload):
            raise ValueError
        version, cursor_key, created, ref = payload.split(":")
        position = (float(created), int(ref))
        if version != "1" or not math.isfinite(position[0]):
            raise ValueError
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise ValueError(f"cursor {cursor[:40]!r} is damaged: pass a next_cursor exactly as a page gave it, or "
                         f"None for the first page.") from None
    if cursor_key != key:
        raise ValueError("cursor belongs to another query (other runs, filter or order): a cursor only reads on "
                         "the query that gave it; start again with cursor=None.")
    return position


def page_of(rows: list[tuple[float, int, T]], limit: int | None, key: str) -> Page[T]:
    """A page from the rows read after the cursor, in order: up to `limit` + 1 (one more tells that a
    next page exists)."""
    if limit is None or len(rows) <= limit:
        return Page(tuple(item for _, _, item in rows), None)
    kept = rows[:limit]
    created, ref, _ = kept[-1]
    return Page(tuple(item for _, _, item in kept), encode_cursor(key, created, ref))


# -- the change feed, logs ------------------------------------------------------------------------
@attrs.frozen(slots=True)
class Change:
    """A state a run entered, in the order the store stored them (`seq` increases).

    `kind` is "flow_run" or "task_run" (None if the run's own record was never stored); `flow_run_id`
    is the flow run's id for a flow run, the flow run a task run belongs to for a task run (as in
    `State.state_details`); `run_name` is the run's current name."""

    seq: int
    run_id: uuid.UUID
    kind: str | None
    flow_run_id: uuid.UUID | None
    run_name: str | None
    state_type: StateType
    state_name: str
    state_message: str | None
    ts: float

    def to_state(self) -> State[Any]:
        return State(self.state_type, self.state_name, self.state_message, ts=self.ts)


def check_since(since: Any) -> int:
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        raise ValueError(f"since must be a sequence number (an integer >= 0, 0 for the start); got {since!r}.")
    return since


def check_feed_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1; got {limit!r}.")
    return limit


LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}


def levels_from(level: Any) -> tuple[str, ...] | None:
    """The stored level names at or above `level` (a name, any case, or a number); None for all."""
    if level is None:
        return None
    if isinstance(level, str):
        name = level.strip().upper()
        name = _ALIASES.get(name, name)
        if name not in LEVELS:
            raise ValueError(f"level {level!r} is not a log level: use one of DEBUG, INFO, WARNING, ERROR, "
                             f"CRITICAL (or a number).")
        threshold = LEVELS[name]
    elif isinstance(level, int) and not isinstance(level, bool):
        threshold = level
    else:
        raise TypeError(f"level must be a level name such as 'WARNING' or a number; got {type(level).__name__}.")
    return tuple(name for name, number in LEVELS.items() if number >= threshold)


# -- timelines ------------------------------------------------------------------------------------
@attrs.frozen(slots=True)
class TaskRunTimeline:
    """A task run and every state it entered, in order."""

    run: TaskRun
    states: tuple[State[Any], ...]


@attrs.frozen(slots=True)
class Timeline:
    """A flow run, every state it entered, its task runs (in the order they were created) with
    theirs, and its subflow runs (in order) with their own timelines."""

    flow_run: FlowRun
    states: tuple[State[Any], ...]
    task_runs: tuple[TaskRunTimeline, ...]
    subflows: tuple[Timeline, ...]

    def walk(self) -> Iterator[Timeline]:
        """This timeline and every nested subflow's, depth first."""
        yield self
        for sub in self.subflows:
            yield from sub.walk()


def build_timeline(root: uuid.UUID, flow_runs: Iterable[tuple[float, int, FlowRun]],
                   task_runs: Iterable[tuple[float, int, TaskRun]],
                   states: Mapping[int, list[State[Any]]]) -> Timeline | None:
    """Nest what the store read: runs as (created, ref, run), states by the run's ref, in order.
    None if `root` is not among the flow runs."""
    children: dict[uuid.UUID | None, list[tuple[float, int, FlowRun]]] = {}
    top = None
    for row in flow_runs:
        if row[2].id == root:
            top = row
        else:
            children.setdefault(row[2].parent_flow_run_id, []).append(row)
    if top is None:
        return None
    tasks: dict[uuid.UUID | None, list[tuple[float, int, TaskRun]]] = {}
    for task_row in task_runs:
        tasks.setdefault(task_row[2].flow_run_id, []).append(task_row)
    none: list[State[Any]] = []

    def build(row: tuple[float, int, FlowRun], seen: frozenset[uuid.UUID]) -> Timeline:
        run = row[2]
        seen = seen | {run.id}
        mine = sorted(tasks.get(run.id, ()), key=_position)
        subs = sorted(children.get(run.id, ()), key=_position)
        return Timeline(run, tuple(states.get(row[1], none)),
                        tuple([TaskRunTimeline(t, tuple(states.get(ref, none))) for _, ref, t in mine]),
                        tuple(build(sub, seen) for sub in subs if sub[2].id not in seen))

    return build(top, frozenset())


def _position(row: tuple[float, int, Any]) -> tuple[float, int]:
    return row[0], row[1]


# -- counts ---------------------------------------------------------------------------------------
@attrs.frozen(slots=True)
class StateCount:
    """How many flow runs created in [start, start + bucket_seconds) are in this state now."""

    start: float
    state_type: StateType
    state_name: str
    count: int


def check_bucket(bucket_seconds: Any) -> float:
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, (int, float)) or not (
            math.isfinite(bucket_seconds) and bucket_seconds > 0):
        raise ValueError(f"bucket_seconds must be a number of seconds > 0; got {bucket_seconds!r}.")
    return float(bucket_seconds)


def bucket_of(created: float, bucket_seconds: float) -> int:
    """The bucket number, as SQLite's CAST(created / b AS INTEGER) computes it."""
    return int(created / bucket_seconds)


__all__ = ["Change", "Page", "RunFilter", "StateCount", "TaskRunTimeline", "Timeline"]
