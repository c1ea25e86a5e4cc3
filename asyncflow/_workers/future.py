"""Futures of delayed runs: they resolve from any process, through the broker.

`.delay()` in async code (an event loop runs in the calling thread) must not wait for the broker on
the loop: the SQLite broker can wait up to 30 s for a busy database. There the enqueue (and the
`Scheduled` record) is handed to one background thread that works through a FIFO queue, so runs
reach the broker in the order they were delayed; the future returns at once. The hand-off is
finished before the future is first waited on or asked for its result, before a later sync `.delay()`
enqueues, and at process exit (the thread is not a daemon). If the enqueue fails, the future resolves
Failed with that error. Sync callers enqueue in place, as before, and get the error raised.

What the broker says is checked before it is believed: a result whose checksum fails, that cannot be
unpickled here, or a state asyncflow does not know raise BrokerDataError naming the run, the task and
the cause (never an exception object handed out as the value). A run the broker does not know for
ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS (deleted, pruned, lost by a Redis without persistence) ends
`Crashed` with LostRunError; a broker that cannot be reached for as long raises BrokerUnavailableError.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import cloudpickle

from .. import _fork, _settings
from .._engine.loop import in_async_context
from .._exceptions import (
    BlockingResultError,
    BrokerDataError,
    BrokerUnavailableError,
    LostRunError,
    UpstreamTaskError,
)
from .._states import State, StateDetails, StateType
from .blob import DamagedBlob, seal, unseal
from .broker import RunOutcome, get_broker


class _UnloadableResult(State[Any]):
    """A run that completed in the worker whose value cannot be handed out here: `.result()` raises why."""

    __slots__ = ("error",)
    error: BaseException | None

    def __init__(self, type: StateType, name: str, message: str | None = None, data: Any = None,
                 state_details: StateDetails | None = None, ts: float | None = None,
                 error: BaseException | None = None) -> None:
        super().__init__(type, name, message, data, StateDetails() if state_details is None else state_details,
                         *(() if ts is None else (ts,)))
        object.__setattr__(self, "error", error)

    def _result(self, raise_on_failure: bool = True) -> Any:  # (behind `result()` and `aresult()`)
        assert self.error is not None
        raise self.error


def _label(outcome: RunOutcome) -> str:
    return f"task {outcome.task_name!r}" if outcome.task_name else "an unknown task"


def _load(outcome: RunOutcome, run_id: uuid.UUID, state_type: StateType) -> tuple[Any, BrokerDataError | None]:
    """The value (or exception) a finished run's outcome carries, or the error saying why it cannot be had."""
    where = f"task run {run_id} ({_label(outcome)})"
    completed = state_type is StateType.COMPLETED
    what = "result" if completed else "exception"
    if outcome.result is None:
        return None, BrokerDataError(
            f"The stored result of {where} is missing: the run ended {state_type.value} in the worker, but the "
            f"broker's record has no value for it (the record was changed after it was written). Run it again.")
    try:
        raw = unseal(outcome.result, "result", str(run_id))
    except DamagedBlob as exc:
        return None, BrokerDataError(
            f"The stored result of {where} is damaged: {exc}. The run ended {state_type.value} in the worker, "
            f"but its {what} cannot be trusted; run it again.")
    try:
        return cloudpickle.loads(raw), None
    except Exception as exc:
        reported = "" if completed or not outcome.message else f" The worker reported: {outcome.message}"
        return None, BrokerDataError(
            f"The {what} of {where} cannot be loaded in this process: {type(exc).__name__}: {exc}. The run ended "
            f"{state_type.value} in the worker; the {what}'s class must be importable here too (a module installed "
            f"only where the worker runs is the usual cause): install it here, or return plain values.{reported}")


def outcome_to_state(outcome: RunOutcome | None, run_id: uuid.UUID) -> State[Any]:
    details = StateDetails(task_run_id=run_id)
    if outcome is None:
        return State(StateType.SCHEDULED, "Scheduled", "Not in the broker (yet).", None, details)
    try:
        state_type = StateType(outcome.state_type)
    except ValueError:
        raise BrokerDataError(
            f"The broker's record of task run {run_id} ({_label(outcome)}) has an unknown state "
            f"{outcome.state_type!r} (named {outcome.state_name!r}): the record is damaged, or was written by "
            f"another program or a newer asyncflow. The run's outcome is unknown; run it again if you need it."
        ) from None
    if not outcome.finished or (outcome.result is None and state_type is not StateType.COMPLETED):
        return State(state_type, outcome.state_name, outcome.message, None, details)
    data, error = _load(outcome, run_id, state_type)
    if error is None:
        return State(state_type, outcome.state_name, outcome.message, data, details)
    if state_type is StateType.COMPLETED:
        return _UnloadableResult(state_type, outcome.state_name, str(error), None, details, error=error)
    return State(state_type, outcome.state_name, outcome.message, error, details)


def _grace() -> float:
    return float(_settings.TASK_WORKER_LOST_RUN_SECONDS.value())


class _Enqueue:
    """One run on its way to the broker (and its `Scheduled` record to the store)."""

    __slots__ = ("queued", "run", "state", "broker", "error", "done")

    def __init__(self, queued: Any, run: Any, state: State[Any], broker: Any) -> None:
        self.queued = queued
        self.run = run
        self.state = state
        self.broker = broker  # None: the process's broker, looked up where the enqueue runs
        self.error: BaseException | None = None
        self.done = threading.Event()

    def __call__(self, in_background: bool) -> None:
        """Enqueue, then record. In the background an enqueue error is kept for the future (and the
        run recorded Failed); in place (sync callers) every error is raised, as it always was."""
        from .._logging import ERROR, log
        from .._store import get_store

        try:
            try:
                broker = self.broker if self.broker is not None else get_broker()
                broker.enqueue(self.queued)
            except BaseException as exc:
                self.error = exc
                if not in_background:
                    raise
                log(ERROR, "asyncflow.task_worker", f"Task run {self.queued.id} ({self.queued.task_name}) could not "
                    f"be queued for a task worker: {exc!r}; its future resolves Failed with this error.", exc_info=exc)
                self._record(get_store(), State(StateType.FAILED, "Failed", f"Could not be queued: {exc!r}", None,
                                                self.state.state_details), in_background)
                return
            self.broker = broker
            self._record(get_store(), self.state, in_background)
        finally:
            self.done.set()

    def _record(self, store: Any, state: State[Any], in_background: bool) -> None:
        try:
            self.run.state = state
            store.record_task_run(self.run, state)
        except Exception as exc:
            if not in_background:
                raise
            from .._logging import WARNING, log

            log(WARNING, "asyncflow.task_worker", f"Task run {self.queued.id} was queued but its {state.name} state "
                f"could not be recorded: {exc!r}")


class _Enqueuer:
    """One thread that takes `_Enqueue`s in order; it ends when there is nothing left, and it is not a
    daemon, so the interpreter waits for the pending ones at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: collections.deque[_Enqueue] = collections.deque()
        self._thread: threading.Thread | None = None

    def submit(self, job: _Enqueue) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._thread is not None:
                return
            thread = self._thread = threading.Thread(target=self._work, name="asyncflow-delay", daemon=False)
            try:
                thread.start()
                return
            except RuntimeError:  # interpreter shutdown: no new threads; do it here (below, unlocked)
                self._jobs.remove(job)
                self._thread = None
        job(in_background=True)

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._thread = None
                    return
                job = self._jobs[0]
            with contextlib.suppress(BaseException):  # kept on the job for its future; the thread goes on with the next
                job(in_background=True)
            with self._lock:
                self._jobs.popleft()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far reached the broker (or failed); False on timeout."""
        with self._lock:
            last = self._jobs[-1] if self._jobs else None
        return last is None or last.done.wait(timeout)

    def _after_fork_in_child(self) -> None:
        """The parent's thread enqueues the parent's runs; the child forgets them (new objects: a lock
        may have been held at the fork) and lets their futures ask the broker."""
        self._lock = threading.Lock()
        for job in self._jobs:
            job.done = threading.Event()
            job.done.set()
        self._jobs = collections.deque()
        self._thread = None


_enqueuer = _Enqueuer()
_fork.register("delay hand-off", reset_in_child=lambda: _enqueuer._after_fork_in_child())


class DelayedFuture:
    """The future of a run handed to a task worker with `.delay()`; rebuild it anywhere with
    `DelayedFuture(task_run_id)`."""

    def __init__(self, task_run_id: uuid.UUID | str, broker: Any = None) -> None:
        self.task_run_id = task_run_id if isinstance(task_run_id, uuid.UUID) else uuid.UUID(str(task_run_id))
        self._broker_or_none = broker if broker is not None else get_broker()
        self._final: State[Any] | None = None
        self._job: _Enqueue | None = None  # the hand-off to the broker, while it may be pending
        self._missing_since: float | None = None  # when the broker was first seen not to know the run
        self._unreachable_since: float | None = None  # when the broker was first seen unreachable

    @classmethod
    def _being_queued(cls, job: _Enqueue) -> DelayedFuture:
        future = cls.__new__(cls)
        future.task_run_id = job.run.id
        future._broker_or_none = None  # known once the job ran (looking it up may touch the database)
        future._final = None
        future._job = job
        future._missing_since = future._unreachable_since = None
        return future

    @property
    def _broker(self) -> Any:
        broker = self._broker_or_none
        if broker is None:
            broker = self._broker_or_none = get_broker()
        return broker

    def _queued(self, wait: bool, timeout: float | None = None) -> bool:
        """Has the run reached the broker (or failed to)? With `wait`, wait for it first (and for every
        run delayed before it: the queue is in order). A failed enqueue makes the future Failed."""
        job = self._job
        if job is None:
            return True
        if not job.done.is_set() and (not wait or not job.done.wait(timeout)):
            return False
        if job.error is not None:
            self._final = State(StateType.FAILED, "Failed", f"The run could not be queued for a task worker: "
                                f"{job.error!r}", job.error, job.state.state_details)
        elif job.broker is not None:
            self._broker_or_none = job.broker
        self._job = None
        return True

    @property
    def state(self) -> State[Any]:
        """The run's state, asked from the broker. Raises BrokerUnavailableError if the broker cannot be
        reached, BrokerDataError if its record is damaged."""
        if self._final is not None:
            return self._final
        job = self._job
        if job is not None and not self._queued(wait=False):
            return job.state  # still on its way: Scheduled, as .delay() promised, without blocking
        if self._final is not None:
            return self._final
        outcome = self._broker.outcome(str(self.task_run_id))
        if outcome is None:
            return self._not_in_the_broker()
        self._missing_since = None
        state = outcome_to_state(outcome, self.task_run_id)
        if state.is_final() or outcome.finished:  # finished without a final state: its upstream failed
            self._final = state
        return state

    def _not_in_the_broker(self) -> State[Any]:
        """Scheduled for a grace period (a rebuilt future may ask before the run reached the broker),
        then Crashed with LostRunError."""
        details = StateDetails(task_run_id=self.task_run_id)
        now = time.monotonic()
        if self._missing_since is None:
            self._missing_since = now
        grace = _grace()
        if now - self._missing_since < grace:
            return State(StateType.SCHEDULED, "Scheduled", "Not in the broker (yet).", None, details)
        error = LostRunError(
            f"The broker ({self._broker!r}) does not know task run {self.task_run_id}, and has not for "
            f"{grace:g} s (ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS): its record was deleted, or pruned after it "
            f"finished (ASYNCFLOW_BROKER_RETENTION_SECONDS), or Redis restarted without persistence and lost "
            f"it, or the id belongs to another broker. The run will not report here; delay it again if it still "
            f"has to run.")
        self._final = State(StateType.CRASHED, "Crashed", str(error), error, details)
        return self._final

    def _poll(self) -> State[Any] | None:
        """The state; None while the broker cannot be reached, for up to the grace period (a Redis
        restart), after which BrokerUnavailableError is raised."""
        try:
            state = self.state
        except BrokerUnavailableError:
            now = time.monotonic()
            if self._unreachable_since is None:
                self._unreachable_since = now
                from .._logging import WARNING, log

                log(WARNING, "asyncflow.task_worker", f"The broker is unreachable while waiting for task run "
                    f"{self.task_run_id}; retrying for up to {_grace():g} s (ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS).")
            if now - self._unreachable_since >= _grace():
                raise
            return None
        self._unreachable_since = None
        return state

    def done(self) -> bool:
        if self._final is None:
            _ = self.state  # sets _final once the run finished
        return self._final is not None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run finishes or `timeout` passes (then return quietly)."""
        if self._final is not None:
            return
        if in_async_context():
            raise BlockingResultError("future.wait() would block the event loop: use `await future` in async code.")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._queued(wait=True, timeout=timeout):
            return
        delay = 0.002
        while True:
            self._poll()
            if self._final is not None:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.1)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        self.wait(timeout)
        if self._final is None:
            raise TimeoutError(f"Task run {self.task_run_id} did not complete within {timeout} seconds")
        return self._final_result(raise_on_failure)

    def _final_result(self, raise_on_failure: bool = True) -> Any:
        final = self._final
        assert final is not None
        if not final.is_final():  # the worker finished it without running it
            raise UpstreamTaskError(f"Task run {self.task_run_id} did not run: {final.message or final.name}")
        return final._result(raise_on_failure=raise_on_failure)

    async def wait_async(self) -> None:
        if self._job is not None:  # the hand-off first, in a thread (cancellable: it goes on anyway)
            await anyio.to_thread.run_sync(self._queued, True, abandon_on_cancel=True)
        delay = 0.002
        while self._final is None:
            await anyio.to_thread.run_sync(self._poll)
            if self._final is not None:
                return
            await anyio.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def __await__(self) -> Any:
        return self._await_result().__await__()

    async def _await_result(self) -> Any:
        await self.wait_async()
        return self._final_result()

    def add_done_callback(self, fn: Callable[[DelayedFuture], Any]) -> None:
        def watch() -> None:
            # a damaged record, a broker gone for good: `fn` finds out from the future
            with contextlib.suppress(Exception):
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
    run_id = new_id()
    waits = [str(f.task_run_id) for f in (wait_for or [])]
    try:
        payload = seal(cloudpickle.dumps((parameters, waits)), "payload", str(run_id))
    except Exception as exc:
        raise TypeError(f"{task.name}.delay(): the arguments cannot be sent to a task worker "
                        f"({type(exc).__name__}: {exc}). Pass picklable values.") from None
    call = TaskCall(task, parameters, None, submitted=False, run_id=run_id)  # recorded Scheduled here
    scheduled: State[Any] = State(StateType.SCHEDULED, "Scheduled", None, None, call.details)
    call.run.state = scheduled
    call.run.parameters = summarise_parameters(parameters)
    job = _Enqueue(QueuedRun(str(run_id), task.task_key, task.name, payload), call.run, scheduled, broker)
    if in_async_context():  # never wait for the broker on the event loop
        _enqueuer.submit(job)
        return DelayedFuture._being_queued(job)
    _enqueuer.flush()  # runs delayed earlier from async code go first
    job(in_background=False)
    return DelayedFuture(run_id, job.broker)
