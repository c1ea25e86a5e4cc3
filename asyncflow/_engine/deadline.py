"""Sync user code with a deadline: it runs in a thread of its own, and is stopped at the deadline."""

from __future__ import annotations

import contextvars
from typing import Any

import anyio

from .._exceptions import FlowRunTimeoutError, TaskRunTimeoutError
from .interrupt import ThreadCall
from .loop import threadsafe_caller

SYNC_ENFORCEMENT = ("the function was stopped at the deadline: the caller moved on at once, and its thread "
                    "raises SyncRunAborted before it runs any more of the function's code")


async def call_sync_with_deadline(fn: Any, limit: float, sync: bool, kind: str) -> Any:
    """Run sync user code in a thread of its own; stop it at the deadline (or when cancelled)."""
    thread_call = ThreadCall(fn, contextvars.copy_context())
    if sync:
        thread_call.start()
        finished = thread_call.done.wait(limit)
    else:
        finished_event = anyio.Event()
        call_soon = threadsafe_caller()
        thread_call.start(lambda: call_soon(finished_event.set))
        finished = False
        try:
            with anyio.move_on_after(limit):
                await finished_event.wait()
                finished = True
        except BaseException:  # cancelled from outside (its flow timed out or was cancelled)
            thread_call.abandon()
            raise
    if not finished:
        thread_call.abandon()
        error = TaskRunTimeoutError if kind == "Task" else FlowRunTimeoutError
        raise error(f"{kind} run exceeded timeout of {limit:g} second(s); {SYNC_ENFORCEMENT}")
    return thread_call.outcome()
