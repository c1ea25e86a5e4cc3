"""Futures of delayed runs: they resolve from any process, through the broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import cloudpickle

from .._engine.loop import in_async_context
from .._exceptions import BlockingResultError
from .._states import State, StateType
from .broker import RunOutcome, get_broker


def outcome_to_state(outcome: RunOutcome | None, run_id: uuid.UUID) -> State[Any]:
    from .._states import StateDetails

    details = StateDetails(task_run_id=run_id)
    if outcome is None:
        return State(StateType.SCHEDULED, "Scheduled", "Not in the broker (yet).", None, details)
    data = None
    if outcome.finished and outcome.result is not None:
        try:
            data = cloudpickle.loads(outcome.result)
        except Exception as exc:  # e.g. the class of the result is not importable here
            data = RuntimeError(f"the result of task run {run_id} cannot be loaded in this process: {exc!r}")
    return State(StateType(outcome.state_type), outcome.state_name, outcome.message, data, details)


class DelayedFuture:
    """The future of a run handed to a task worker with `.delay()`; rebuild it anywhere with
    `DelayedFuture(task_run_id)`."""

    def __init__(self, task_run_id: uuid.UUID | str, broker: Any = None) -> None:
        self.task_run_id = task_run_id if isinstance(task_run_id, uuid.UUID) else uuid.UUID(str(task_run_id))
        self._broker = broker if broker is not None else get_broker()
        self._final: State[Any] | None = None

    @property
    def state(self) -> State[Any]:
        if self._final is not None:
            return self._final
        state = outcome_to_state(self._broker.outcome(str(self.task_run_id)), self.task_run_id)
        if state.is_final():
            self._final = state
        return state

    def done(self) -> bool:
        return self.state.is_final()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run finishes or `timeout` passes (then return quietly)."""
        if self._final is not None:
            return
        if in_async_context():
            raise BlockingResultError("future.wait() would block the event loop: use `await future` in async code.")
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        while not self.done():
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.1)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        self.wait(timeout)
        if self._final is None:
            raise TimeoutError(f"Task run {self.task_run_id} did not complete within {timeout} seconds")
        return self._final.result(raise_on_failure=raise_on_failure)

    async def wait_async(self) -> None:
        delay = 0.002
        while True:
            state = await anyio.to_thread.run_sync(lambda: self.state)
            if state.is_final():
                return
            await anyio.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def __await__(self) -> Any:
        return self._await_result().__await__()

    async def _await_result(self) -> Any:
        await self.wait_async()
        assert self._final is not None
        return self._final.result()

    def add_done_callback(self, fn: Callable[[DelayedFuture], Any]) -> None:
        def watch() -> None:
            self.wait()
            fn(self)

        threading.Thread(target=watch, name="asyncflow-delayed-callback", daemon=True).start()

    def __repr__(self) -> str:
        return f"DelayedFuture({str(self.task_run_id)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DelayedFuture) and other.task_run_id == self.task_run_id

    def __hash__(self) -> int:
        return hash(self.task_run_id)

    def __reduce__(self) -> Any:  # passed to another delayed run: travels as its id
        return (DelayedFuture, (str(self.task_run_id),))


def delay(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any = None,
          broker: Any = None) -> DelayedFuture:
    """Queue a run of `task` for a task worker and return its future at once."""
    from .._engine.resolve import unfinished_in
    from .._engine.task_run import TaskCall, summarise_parameters
    from .._futures import TaskRunFuture
    from .._ids import new_id
    from .._store import get_store
    from .broker import QueuedRun

    parameters = task.binder.bind(tuple(args), dict(kwargs or {}))
    if unfinished_in(*parameters.values()) or any(isinstance(v, TaskRunFuture) for v in parameters.values()):
        raise TypeError(
            f"{task.name}.delay(): an argument is the future of a run in this process, which a task worker "
            f"cannot wait for. Pass its result (future.result()), or delay the upstream task too and pass "
            f"that DelayedFuture.")
    for future in wait_for or ():
        if not isinstance(future, DelayedFuture):
            raise TypeError(f"{task.name}.apply_async(wait_for=...): only futures of delayed runs "
                            f"(DelayedFuture) can be waited for by a task worker; got {future!r}.")
    broker = broker if broker is not None else get_broker()
    run_id = new_id()
    waits = [str(f.task_run_id) for f in (wait_for or [])]
    try:
        payload = cloudpickle.dumps((parameters, waits))
    except Exception as exc:
        raise TypeError(f"{task.name}.delay(): the arguments cannot be sent to a task worker "
                        f"({type(exc).__name__}: {exc}). Pass picklable values.") from None
    broker.enqueue(QueuedRun(str(run_id), task.task_key, task.name, payload))
    call = TaskCall(task, parameters, None, submitted=False, run_id=run_id)  # record it Scheduled here
    scheduled = State(StateType.SCHEDULED, "Scheduled", None, None, call.details)
    call.run.state = scheduled
    call.run.parameters = summarise_parameters(parameters)
    store = get_store()
    store.record_task_run(call.run)
    store.record_state(run_id, scheduled)
    return DelayedFuture(run_id, broker)
