"""Waiting for slots: one async function for every caller. The sync API drives it with the blocking
bridge (its sleeps block the thread), the async API awaits it on asyncio or trio; the engine's tag hook
uses the run's own bridge.

A wait polls the database with exponential backoff (10 ms doubling to 1 s, with jitter): never a busy
loop, and every poll is one short transaction. Between polls nothing is held, so cancelling a waiter
(a cancel scope, a timeout around it) leaves nothing behind. `timeout_seconds` bounds the whole wait.
"""

from __future__ import annotations

import functools
import random
import threading
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import attrs

from .._clock import Clock, get_clock
from .._exceptions import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError
from .._logging import WARNING, log
from .._store import owners as _owners
from . import leases, sql
from .db import Busy, LimitsDB, current_or_raise

FIRST_DELAY = 0.01
MAX_DELAY = 1.0
_warned: set[tuple[str, ...]] = set()
_warned_lock = threading.Lock()
_REAL_TIME = Clock()  # waiting for another connection's lock is real time, whatever clock the engine uses


@attrs.define(eq=False)
class Lease:
    """Slots held by one `concurrency` block (or one task run): release them once, when its code ends."""

    db: LimitsDB
    id: str
    limits: tuple[sql.Limit, ...]
    released: bool = False

    def release(self) -> None:
        """One attempt now; if the database is busy the lease thread frees the slots soon after (for a
        run that was cancelled or crashed: nothing waits for it)."""
        if not self.released:
            self.released = True
            leases.release(self.db, self.id)

    async def free(self, bridge: Any) -> None:
        """Free the slots before the holder goes on (the block has ended: its slots are free), waiting
        through `bridge` while the database is busy: on an event loop awaiting, shielded from a
        cancellation (a cancelled block still frees what it held), in a thread sleeping."""
        if self.released:
            return
        self.released = True
        if bridge.blocking:
            await leases.release_waiting(self.db, self.id, functools.partial(bridge.sleep, _REAL_TIME))
            return
        with anyio.CancelScope(shield=True):
            await leases.release_waiting(self.db, self.id, functools.partial(bridge.sleep, _REAL_TIME))


@attrs.frozen
class Request:
    names: list[str]
    occupy: int
    mode: str  # "concurrency" (held until released) or "rate_limit" (decaying)
    timeout_seconds: float | None
    max_retries: int | None
    lease_seconds: float
    strict: bool
    holder: str | None

    @classmethod
    def checked(cls, names: Any, occupy: Any, mode: str, timeout_seconds: Any = None, max_retries: Any = None,
                lease_duration: Any = 300, strict: Any = False, holder: Any = None) -> Request:
        """Every argument checked, with an error naming it and what it accepts."""
        if max_retries is not None and (isinstance(max_retries, bool) or not isinstance(max_retries, int)
                                        or max_retries < 0):
            raise ValueError(f"max_retries must be an integer >= 0 or None (wait as long as timeout_seconds "
                             f"allows); got {max_retries!r}.")
        lease = sql.check_seconds(lease_duration, "lease_duration", allow_none=False)
        assert lease is not None
        if lease < 1:
            raise ValueError(f"lease_duration must be at least 1 second (it is renewed a few times per duration "
                             f"while held); got {lease_duration!r}.")
        if holder is not None and not isinstance(holder, (str, dict)):
            raise TypeError(f"holder must be a string or a dict such as {{'type': 'task_run', 'id': ...}}; "
                            f"got {type(holder).__name__}.")
        return cls(sql.check_names(names) if names else [], sql.check_occupy(occupy), mode,
                   sql.check_seconds(timeout_seconds, "timeout_seconds"), max_retries, lease, bool(strict),
                   _holder(holder))


def _holder(holder: Any) -> str | None:
    """As stored: a string as given; Prefect's `{"type": "task_run", "id": ...}` as "task_run:<id>" (the
    form the engine's tag limits record, and the client's `active_slots` read)."""
    if isinstance(holder, dict) and set(holder) == {"type", "id"}:
        return f"{holder['type']}:{holder['id']}"
    return None if holder is None else str(holder)


async def acquire(request: Request, bridge: Any, on_wait: Callable[[str], None] | None = None,
                  quiet: bool = False) -> Lease | None:
    """Wait until `request.occupy` slots of every named active limit are taken (all at once); returns
    the lease to release (None: nothing to hold, such as names that are not limits, or `rate_limit`).
    `on_wait(message)` is called once, when an attempt first finds a limit full. `quiet`: names that
    are not limits are expected (tag limits), say nothing."""
    if not request.names:
        return None
    db = current_or_raise()
    clock = get_clock()
    deadline = None if request.timeout_seconds is None else clock.time() + request.timeout_seconds
    lease_id = str(uuid.uuid4())
    owner = _owners.this_process()
    attempt = 0
    blocked: tuple[sql.Limit, ...] = ()
    while True:
        now = clock.time()
        try:
            claim = db.attempt(functools.partial(sql.claim, names=request.names, occupy=request.occupy,
                                                 mode=request.mode, lease=lease_id, lease_seconds=request.lease_seconds,
                                                 holder=request.holder, owner=owner, now=now,
                                                 strict=request.strict))
        except Busy:
            claim = None
        if claim is not None:
            if claim.missing:
                _missing(request, claim, quiet)
            if not claim.blocked:
                if not claim.acquired:
                    return None
                if request.mode == "rate_limit":
                    return None
                leases.hold(db, lease_id, request.lease_seconds)
                return Lease(db, lease_id, claim.acquired)
            if not blocked and on_wait is not None:  # the first time a limit is found full
                on_wait(f"Waiting for {request.occupy} slot(s) of {_describe(claim.blocked)}.")
            blocked = claim.blocked
            try:  # holders on this host that died: their slots are free now, not when their lease expires
                if db.attempt(functools.partial(sql.free_dead_holders, names=[limit.name for limit in blocked])):
                    continue
            except Busy:
                pass
        if request.max_retries is not None and attempt >= request.max_retries:
            raise ConcurrencySlotAcquisitionError(
                f"Unable to acquire {request.occupy} slot(s) of {_describe(blocked) or request.names}: still taken "
                f"after {attempt + 1} attempt(s) (max_retries={request.max_retries}).")
        delay = min(FIRST_DELAY * 2 ** min(attempt, 20), MAX_DELAY) * random.uniform(0.75, 1.25)
        if deadline is not None:
            left = deadline - clock.time()
            if left <= 0:
                raise AcquireConcurrencySlotTimeoutError(
                    f"Attempt to acquire {request.occupy} concurrency slot(s) timed out after "
                    f"{request.timeout_seconds:g} second(s): {_describe(blocked) or request.names} stayed full.")
            delay = min(delay, left)
        attempt += 1
        await bridge.sleep(clock, delay)


def _describe(limits: tuple[sql.Limit, ...]) -> str:
    return ", ".join(f"concurrency limit {limit.name!r} ({limit.active_slots:g} of {limit.limit} slot(s) in use)"
                     for limit in limits)


def _missing(request: Request, claim: sql.Claim, quiet: bool) -> None:
    """Names that are not limits: an error with `strict`, else a warning once per process."""
    if request.strict:
        raise ConcurrencySlotAcquisitionError(
            f"Concurrency limit(s) {list(claim.missing)!r} must be created before acquiring slots "
            f"(`asyncflow gcl create NAME --limit N`); strict=True does not run the code without them.")
    if quiet:
        return
    key = tuple(claim.missing)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log(WARNING, "asyncflow.concurrency", f"Concurrency limits {list(claim.missing)!r} do not exist - skipping "
        f"acquisition (create them with `asyncflow gcl create NAME --limit N`; strict=True raises instead).",
        _run_ids())


def _run_ids() -> dict[str, Any] | None:
    from .._context import TaskRunContext, current_run

    ctx = current_run.get()
    if ctx is None:
        return None
    if isinstance(ctx, TaskRunContext):
        flow_ctx = ctx.flow_context
        return {"task_run_id": str(ctx.task_run.id),
                "flow_run_id": flow_ctx.ids["flow_run_id"] if flow_ctx is not None else None}
    return dict(ctx.flow_context.ids) if ctx.flow_context is not None else None
