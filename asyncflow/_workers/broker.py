"""The broker interface: a queue of delayed task runs with leases, and their outcomes.

Delivery is at least once: a worker claims a run with a lease and renews it while the run is alive;
if the worker dies, the lease expires and another worker claims the run again. The outcome is
recorded once: `complete` only succeeds for the first worker to finish a run.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs


@attrs.frozen
class QueuedRun:
    id: str
    task_key: str
    task_name: str
    payload: bytes  # cloudpickled (parameters, wait_for run ids)
    attempts: int = 0


@attrs.frozen
class RunOutcome:
    """What a future can know about a delayed run from any process."""

    state_type: str
    state_name: str
    message: str | None
    result: bytes | None  # cloudpickled result (completed) or exception (failed)
    finished: bool


class Broker(Protocol):
    def enqueue(self, run: QueuedRun) -> None: ...

    def claim(self, task_keys: list[str], worker_id: str, lease_seconds: float, limit: int) -> list[QueuedRun]: ...

    def renew(self, run_ids: list[str], worker_id: str, lease_seconds: float) -> None: ...

    def set_state(self, run_id: str, worker_id: str, state_type: str, state_name: str) -> None: ...

    def complete(self, run_id: str, worker_id: str, state_type: str, state_name: str, message: str | None,
                 result: bytes | None) -> bool: ...

    def release(self, run_id: str, worker_id: str) -> None: ...

    def outcome(self, run_id: str) -> RunOutcome | None: ...

    def close(self) -> None: ...


_brokers: dict[tuple[str | None, str | None], Any] = {}


def get_broker(url: str | None = None) -> Any:
    """The broker named by `url` or the setting ASYNCFLOW_BROKER_URL: `sqlite:///path` (default:
    the store's database under ASYNCFLOW_HOME) or `redis://host:port/db`. One per location and process."""
    import os

    from .. import _settings

    url = url or _settings.BROKER_URL.value() or None  # environment, profile file (config set), default
    key = (url, os.environ.get("ASYNCFLOW_HOME"))
    broker = _brokers.get(key)
    if broker is None:
        broker = _brokers[key] = _make_broker(url)
    return broker


def _make_broker(url: str | None) -> Any:
    from .. import _settings

    if url is None or url.startswith("sqlite"):
        from .sqlite_broker import SQLiteBroker

        path = url[len("sqlite:///"):] if url and url.startswith("sqlite:///") else None
        return SQLiteBroker(path or (_settings.HOME.value() / "asyncflow.db"))
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis_broker import RedisBroker

        return RedisBroker(url)
    raise ValueError(f"ASYNCFLOW_BROKER_URL={url!r} is not supported: use sqlite:///path or redis://host:port/db.")
