"""`concurrency` and `rate_limit` for async code (Prefect's `prefect.concurrency.asyncio`). Named
after Prefect's module, they run on any anyio backend: asyncio and trio.

    from asyncflow.concurrency.asyncio import concurrency, rate_limit

    async with concurrency("database", occupy=1, timeout_seconds=30):
        ...

Waiting sleeps on the event loop (other tasks run meanwhile) and can be cancelled; each poll of the
store is one short transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .._engine.bridge import AWAITING
from .._exceptions import AcquireConcurrencySlotTimeoutError as AcquireConcurrencySlotTimeoutError
from .._exceptions import ConcurrencySlotAcquisitionError as ConcurrencySlotAcquisitionError
from .._limits.acquire import Request, acquire


@asynccontextmanager
async def concurrency(names: str | list[str], occupy: int = 1, timeout_seconds: float | None = None,
                      max_retries: int | None = None, lease_duration: float = 300, strict: bool = False,
                      holder: Any = None) -> AsyncIterator[None]:
    """Hold `occupy` slots of each named limit while the block runs; see
    `asyncflow.concurrency.sync.concurrency` for the arguments and errors. Cancelling the block (or
    the wait) releases what it holds."""
    request = Request.checked(names, occupy, "concurrency", timeout_seconds, max_retries, lease_duration, strict,
                              holder)
    lease = await acquire(request, AWAITING)
    try:
        yield
    finally:
        if lease is not None:
            await lease.free(AWAITING)


async def rate_limit(names: str | list[str], occupy: int = 1, timeout_seconds: float | None = None,
                     strict: bool = False) -> None:
    """Wait until `occupy` slots of each named limit are free and take them (they drain at the limit's
    `slot_decay_per_second`)."""
    request = Request.checked(names, occupy, "rate_limit", timeout_seconds, None, 300, strict)
    await acquire(request, AWAITING)


__all__ = ["AcquireConcurrencySlotTimeoutError", "ConcurrencySlotAcquisitionError", "concurrency", "rate_limit"]
