"""Sync user code with a deadline: it runs in a thread of its own, and is stopped at the deadline.

The deadline starts when the call is made, not when the caller starts waiting (a thread that grabs
the GIL at once would otherwise push it back). The shared stopper thread (`interrupt`) stops the call
at the deadline; the caller then reports how the timeout was enforced, in the exception message that
the engine puts in the `TimedOut` state:

- `SYNC_ENFORCEMENT`: stopped at the deadline, the usual case (the function was blocked or running
  Python code);
- `SYNC_GIL_ENFORCEMENT`: the function's thread held the GIL past the deadline (C code that does not
  release it), so nothing could run until that call returned; it was stopped then (usually before the
  next line: see `interrupt` for why that cannot be guaranteed);
- `SYNC_LATE_RETURN`: the same, but the function returned (or raised) before the stop could land: its
  result is discarded, the run is still `TimedOut`.

A late stop alone does not prove that the function held the GIL: on a busy machine the stopper itself
may run late, or another thread may hold the GIL. So the GIL is blamed only when the function's thread
demonstrably ran after the deadline: it used more CPU in all than it could have used before the
deadline (its CPU clock, `UserCode.measure_cpu`). A sleeping thread that was stopped late gets
`SYNC_ENFORCEMENT`, one that returned late `SYNC_LATE_RETURN_BUSY`.

A call that never returns cannot be stopped by any thread: see `interrupt` (and, for a hard stop,
run the task in a process).
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from .._exceptions import FlowRunTimeoutError, TaskRunTimeoutError
from .interrupt import ThreadCall, cpu_after
from .loop import context_for_another_thread, threadsafe_caller

SYNC_ENFORCEMENT = ("the function was stopped at the deadline: the caller moved on at once, and its thread "
                    "raises SyncRunAborted before it runs any more of the function's code")
SYNC_GIL_ENFORCEMENT = ("the deadline passed while the function's thread held the GIL (C code that does not "
                        "release it), so nothing could stop it on time; it was stopped {late:.2f} s late, when "
                        "that call returned (its thread raised SyncRunAborted as soon as it let another thread "
                        "run, which is usually before its next line)")
SYNC_LATE_RETURN = ("the deadline passed while the function's thread held the GIL (C code that does not "
                    "release it), so nothing could stop it on time; it returned {late:.2f} s late, before the "
                    "stop could land, and its result was discarded")
SYNC_LATE_RETURN_BUSY = ("the function returned {late:.2f} s after the deadline, before the stop could land "
                         "(the stop itself ran late: the machine was busy), and its result was discarded")
_GIL_LATE_SECONDS = 0.1  # a stop this late means the stopper could not run on time ...
_RAN_AFTER_SECONDS = 0.02  # ... and the function's thread is to blame if it ran this long after the deadline


async def call_sync_with_deadline(fn: Any, limit: float, sync: bool, kind: str, label: str | None = None) -> Any:
    """Run sync user code in a thread of its own; stop it at the deadline (or when cancelled)."""
    deadline = time.monotonic() + limit
    thread_call = ThreadCall(fn, context_for_another_thread(), deadline, label)
    if sync:
        thread_call.start()
        thread_call.done.wait(max(0.0, deadline - time.monotonic()))
    else:
        finished_event = anyio.Event()
        call_soon = threadsafe_caller()
        thread_call.start(lambda: call_soon(finished_event.set))
        try:
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                await finished_event.wait()
        except BaseException:  # cancelled from outside (its flow timed out or was cancelled)
            thread_call.abandon()
            raise
    if thread_call.done.is_set() and not thread_call.timed_out:
        return thread_call.outcome()
    thread_call.abandon()  # a no-op if the stopper got there first
    error = TaskRunTimeoutError if kind == "Task" else FlowRunTimeoutError
    raise error(f"{kind} run exceeded timeout of {limit:g} second(s); {_enforcement(thread_call, deadline)}")


def _enforcement(thread_call: ThreadCall, deadline: float) -> str:
    user = thread_call.user
    if thread_call.late:
        late = max(0.0, thread_call.returned_at - deadline)
        ran = cpu_after(deadline, user.started_at, thread_call.cpu_at_return - thread_call.cpu_at_start)
        if late < _RAN_AFTER_SECONDS or ran >= _RAN_AFTER_SECONDS:
            return SYNC_LATE_RETURN.format(late=late)
        return SYNC_LATE_RETURN_BUSY.format(late=late)
    late = user.aborted_at - deadline
    ran_after = user.cpu_after(deadline)  # None without a per-thread CPU clock (Windows): lateness decides
    if late >= _GIL_LATE_SECONDS and (ran_after is None or ran_after >= _RAN_AFTER_SECONDS):
        return SYNC_GIL_ENFORCEMENT.format(late=late)
    return SYNC_ENFORCEMENT
