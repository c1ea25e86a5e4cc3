"""The broker interface: a queue of delayed task runs with leases, and their outcomes.

Delivery is at least once: a worker claims a run with a lease and renews it while the run is alive;
if the worker dies, the lease expires and another worker claims the run again. The outcome is
recorded once: `complete` only succeeds for the first worker to finish a run.

Every broker method raises BrokerUnavailableError (naming the broker and the fix) when the broker
cannot be reached or opened; callers that can wait (workers, futures) retry with `Backoff`. Payloads
and results are sealed blobs (`blob.py`): the brokers store them as they are.
"""

from __future__ import annotations

import math
import random
from typing import Any, Protocol

import attrs


@attrs.frozen
class QueuedRun:
    id: str
    task_key: str
    task_name: str
    payload: bytes  # sealed (blob.py) cloudpickle of (parameters, wait_for run ids)
    attempts: int = 0


@attrs.frozen
class RunOutcome:
    """What a future can know about a delayed run from any process."""

    state_type: str
    state_name: str
    message: str | None
    result: bytes | None  # sealed (blob.py) cloudpickle of the result (completed) or exception (failed)
    finished: bool
    task_name: str | None = None  # for messages (None: a record written before it was kept)


class Broker(Protocol):
    def enqueue(self, run: QueuedRun) -> None: ...

    def claim(self, task_keys: list[str], worker_id: str, lease_seconds: float, limit: int) -> list[QueuedRun]: ...

    def renew(self, run_ids: list[str], worker_id: str, lease_seconds: float) -> None: ...

    def set_state(self, run_id: str, worker_id: str, state_type: str, state_name: str) -> None: ...

    def complete(self, run_id: str, worker_id: str, state_type: str, state_name: str, message: str | None,
                 result: bytes | None) -> bool: ...

    def release(self, run_id: str, worker_id: str) -> None: ...

    def outcome(self, run_id: str) -> RunOutcome | None: ...

    def prune(self, older_than_seconds: float) -> int:
        """Remove the finished runs that finished more than `older_than_seconds` ago (state, result,
        pickled arguments); return how many. Queued and running runs are never removed."""
        ...

    def close(self) -> None: ...


def check_age(older_than_seconds: float) -> float:
    if isinstance(older_than_seconds, bool) or not isinstance(older_than_seconds, (int, float)) \
            or not math.isfinite(older_than_seconds) or older_than_seconds < 0:
        raise ValueError(f"prune(older_than_seconds=...) takes a finite number of seconds >= 0; "
                         f"got {older_than_seconds!r}.")
    return float(older_than_seconds)


class Backoff:
    """Capped exponential backoff with jitter (each delay drawn from [d/2, d]), for reconnecting: many
    workers that lost the same broker do not come back at the same instant."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap = base, cap
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** min(self.failures, 32))
        self.failures += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


_brokers: dict[tuple[str | None, ...], Any] = {}


def get_broker(url: str | None = None) -> Any:
    """The broker named by `url` or the setting ASYNCFLOW_BROKER_URL: `sqlite:///path` (default: the
    store's database: SQLite under ASYNCFLOW_HOME, or the PostgreSQL store's), `redis://host:port/db` or
    `postgresql://…`. One per location and process."""
    import os

    from .. import _settings

    url = url or _settings.BROKER_URL.value() or None  # environment, profile file (config set), default
    key = (url, os.environ.get("ASYNCFLOW_HOME"), os.environ.get("ASYNCFLOW_STORE"))
    broker = _brokers.get(key)
    if broker is None:
        broker = _brokers[key] = _make_broker(url)
    return broker


def _make_broker(url: str | None) -> Any:
    from .. import _settings

    if url is None:
        store = _settings.STORE.value()
        if store not in ("sqlite", "memory"):  # a PostgreSQL store: its database is the broker too
            from .postgres_broker import PostgresBroker

            return PostgresBroker(store, origin="the PostgreSQL store's database (ASYNCFLOW_STORE)")
    if url is None or url.startswith("sqlite"):
        from .sqlite_broker import SQLiteBroker

        path = url[len("sqlite:///"):] if url and url.startswith("sqlite:///") else None
        if path:
            return SQLiteBroker(path, origin=f"ASYNCFLOW_BROKER_URL={url}")
        return SQLiteBroker(_settings.HOME.value() / "asyncflow.db", origin="the default broker under ASYNCFLOW_HOME")
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis_broker import RedisBroker

        return RedisBroker(url)
    if url.lower().startswith(("postgresql://", "postgres://")):
        from .postgres_broker import PostgresBroker

        return PostgresBroker(url)
    raise ValueError(f"ASYNCFLOW_BROKER_URL={url!r} is not supported: use sqlite:///path, redis://host:port/db or "
                     f"postgresql://user:password@host:5432/database.")
