"""Concurrency limits, as Prefect writes them: `asyncflow.concurrency.sync` (for sync code) and
`asyncflow.concurrency.asyncio` (for async code, on asyncio and trio alike). The limits live in the
store (SPEC §12): manage them with `asyncflow gcl` and `asyncflow concurrency-limit`."""

from .._exceptions import AcquireConcurrencySlotTimeoutError as AcquireConcurrencySlotTimeoutError
from .._exceptions import ConcurrencySlotAcquisitionError as ConcurrencySlotAcquisitionError

__all__ = ["AcquireConcurrencySlotTimeoutError", "ConcurrencySlotAcquisitionError"]
