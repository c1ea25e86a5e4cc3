"""`concurrency` and `rate_limit` for sync code (Prefect's `prefect.concurrency.sync`).

    from asyncflow.concurrency.sync import concurrency, rate_limit

    with concurrency("database", occupy=1, timeout_seconds=30):
        ...  # at most as many blocks as the limit allows run at once, in every process on the store

The wait blocks the calling thread (called on an event loop's thread, it blocks the loop: use
`asyncflow.concurrency.asyncio` in async code)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._engine.bridge import BLOCKING, drive_sync
from .._exceptions import AcquireConcurrencySlotTimeoutError as AcquireConcurrencySlotTimeoutError
from .._exceptions import ConcurrencySlotAcquisitionError as ConcurrencySlotAcquisitionError
from .._limits.acquire import Request, acquire


@contextmanager
def concurrency(names: str | list[str], occupy: int = 1, timeout_seconds: float | None = None,
                max_retries: int | None = None, lease_duration: float = 300, strict: bool = False,
                holder: Any = None) -> Iterator[None]:
    """Hold `occupy` slots of each named limit while the block runs (waiting for them first).

    Raises `AcquireConcurrencySlotTimeoutError` (a `TimeoutError`) if the slots are not free within
    `timeout_seconds` (None: wait as long as it takes), `ConcurrencySlotAcquisitionError` after
    `max_retries` polls that found a limit full, or, with `strict=True`, if a name is not a limit
    (without it: one warning, and the block runs unlimited). The slots are released when the block
    ends, however it ends; a holder that dies frees them at once on this host, else when its lease
    (`lease_duration` seconds, renewed while the block runs) expires."""
    request = Request.checked(names, occupy, "concurrency", timeout_seconds, max_retries, lease_duration, strict,
                              holder)
    lease = drive_sync(acquire(request, BLOCKING))
    try:
        yield
    finally:
        if lease is not None:
            drive_sync(lease.free(BLOCKING))


def rate_limit(names: str | list[str], occupy: int = 1, timeout_seconds: float | None = None,
               strict: bool = False) -> None:
    """Wait until `occupy` slots of each named limit are free and take them; they are never released
    but drain at the limit's `slot_decay_per_second` (a limit without slot decay is an error)."""
    request = Request.checked(names, occupy, "rate_limit", timeout_seconds, None, 300, strict)
    drive_sync(acquire(request, BLOCKING))


__all__ = ["AcquireConcurrencySlotTimeoutError", "ConcurrencySlotAcquisitionError", "concurrency", "rate_limit"]
