"""Task workers: claim delayed runs from the broker and execute them like any run (retries,
timeouts, caching and hooks apply), holding a lease that they renew while the run is alive.

A worker outlives its broker's outages: every broker call that fails (BrokerUnavailableError, or any
other error) is retried with capped, jittered backoff. Runs in progress go on meanwhile and report their
outcome when the broker is back (their lease may expire meanwhile: then another worker may run them
again, and the first outcome recorded wins). One WARNING when the broker goes away, one INFO when it is
back. A payload that fails its checksum, cannot be unpickled or has the wrong shape fails its run with a
BrokerDataError that says so; the worker goes on.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import cloudpickle

from .. import _settings
from .._engine.bridge import AWAITING
from .._engine.task_run import TaskCall, run_task
from .._exceptions import BrokerDataError, BrokerUnavailableError
from .._logging import ERROR, INFO, WARNING, log
from .._states import StateType
from .blob import DamagedBlob, seal, unseal
from .broker import Backoff, QueuedRun, get_broker
from .future import DelayedFuture

_WHERE = "asyncflow.task_worker"
IDLE_WAIT_SECONDS = 5.0  # the longest an idle worker waits for a broker's notification before it looks again


class TaskWorker:
    """Runs the given tasks' delayed runs, at most `limit` at a time (None: no limit)."""

    def __init__(self, *tasks: Any, limit: int | None = 10, broker: Any = None, lease_seconds: float | None = None,
                 poll_interval: float = 0.05, shutdown_timeout: float = 10.0, reconnect_max_delay: float = 5.0) -> None:
        from .._tasks import BoundTask, Task

        if not tasks:
            raise ValueError("TaskWorker needs at least one task to serve: TaskWorker(my_task, ...).")
        for task in tasks:
            if not isinstance(task, (Task, BoundTask)):
                raise TypeError(f"TaskWorker serves @task functions; got {task!r}. Decorate it with @task.")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive integer or None; got {limit!r}.")
        self.tasks = {task.task_key: task for task in tasks}
        self.limit = limit
        self.broker = broker if broker is not None else get_broker()
        self.lease_seconds = float(lease_seconds if lease_seconds is not None else _lease_setting())
        self.poll_interval = poll_interval
        self.shutdown_timeout = shutdown_timeout
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[str, anyio.CancelScope] = {}
        self._stopping = False
        self._wake: anyio.Event | None = None
        self._all_done: anyio.Event | None = None  # set when the last running run ends (while draining)
        self.reconnect_max_delay = reconnect_max_delay
        self._down_since: float | None = None  # the broker's current outage, as this worker saw it
        self._next_prune = 0.0  # time.monotonic() of the next retention pass (SQLite broker)
        self.completed = 0

    def stop(self) -> None:
        """Stop taking runs; runs in progress get `shutdown_timeout` seconds to finish, then are handed back."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        interrupt = getattr(self.broker, "interrupt_waits", None)
        if interrupt is not None:  # a worker thread waiting for a notification (PostgreSQL) ends its wait
            interrupt()

    async def start(self) -> None:
        log(INFO, _WHERE, f"Worker {self.worker_id} serving {sorted(t.name for t in self.tasks.values())} "
            f"from {self.broker!r}")
        keys = list(self.tasks)
        backoff = Backoff(cap=self.reconnect_max_delay)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew_leases)
            delay = self.poll_interval / 8
            while not self._stopping:
                await self._prune_if_due()
                room = (self.limit - len(self._running)) if self.limit is not None else 100
                claimed = []
                if room > 0:
                    try:
                        claimed = await anyio.to_thread.run_sync(
                            self.broker.claim, keys, self.worker_id, self.lease_seconds, room)
                    except Exception as exc:
                        self._broker_failed(exc, "take runs")
                        await self._pause(backoff.next())
                        continue
                    self._broker_back()
                    backoff.reset()
                started = False
                for queued in claimed:
                    if queued.id in self._running:  # ours, still running (its lease lapsed, e.g. in an outage)
                        continue
                    scope = anyio.CancelScope()
                    self._running[queued.id] = scope
                    tg.start_soon(self._execute, queued, scope)
                    started = True
                if started:
                    delay = self.poll_interval / 8
                    await anyio.lowlevel.checkpoint()
                    continue
                waiter = getattr(self.broker, "wait_for_work", None)
                if waiter is not None and room > 0:  # woken by the broker (LISTEN/NOTIFY): no polling
                    await self._wait_for_work(waiter, keys, backoff)
                    continue
                await self._pause(delay)
                delay = min(delay * 2, self.poll_interval)
            await self._drain()
            tg.cancel_scope.cancel()
        log(INFO, _WHERE, f"Worker {self.worker_id} stopped after {self.completed} run(s)")

    async def _wait_for_work(self, waiter: Callable[..., Any], keys: list[str], backoff: Backoff) -> None:
        """Wait in a thread until the broker says a run may be claimable (or stop() is called). A stop
        abandons the thread, which the broker's `interrupt_waits` ends at once."""
        self._wake = anyio.Event()
        async with anyio.create_task_group() as tg:
            async def wait() -> None:
                try:
                    await anyio.to_thread.run_sync(waiter, keys, IDLE_WAIT_SECONDS, abandon_on_cancel=True)
                except Exception as exc:
                    self._broker_failed(exc, "wait for runs")
                    await anyio.sleep(backoff.next())
                tg.cancel_scope.cancel()

            tg.start_soon(wait)
            await self._wake.wait()
            tg.cancel_scope.cancel()

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless stop() is called meanwhile."""
        self._wake = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._wake.wait()

    def _broker_failed(self, exc: Exception, doing: str) -> None:
        if isinstance(exc, BrokerUnavailableError):
            if self._down_since is None:
                self._down_since = time.monotonic()
                log(WARNING, _WHERE, f"Worker {self.worker_id}: the broker is unavailable, could not {doing}: {exc} "
                    f"Retrying with backoff (at most {self.reconnect_max_delay:g} s apart); runs in progress go "
                    f"on and report their outcome when it is back.")
            return
        log(ERROR, _WHERE, f"Worker {self.worker_id}: could not {doing} ({self.broker!r}): {exc!r}; retrying "
            f"with backoff.", exc_info=exc)

    def _broker_back(self) -> None:
        if self._down_since is not None:
            log(INFO, _WHERE, f"Worker {self.worker_id}: the broker is reachable again "
                f"(after {time.monotonic() - self._down_since:.1f} s)")
            self._down_since = None

    async def _call_broker(self, fn: Callable[..., Any], *args: Any, doing: str) -> Any:
        """A broker call retried with backoff until it succeeds (or the run's scope is cancelled)."""
        backoff = Backoff(cap=self.reconnect_max_delay)
        while True:
            try:
                result = await anyio.to_thread.run_sync(fn, *args)
            except Exception as exc:
                self._broker_failed(exc, doing)
                await anyio.sleep(backoff.next())
                continue
            self._broker_back()
            return result

    async def _prune_if_due(self) -> None:
        """Brokers that keep finished runs (SQLite) lose the ones past ASYNCFLOW_BROKER_RETENTION_SECONDS:
        when the worker starts, then hourly."""
        if getattr(self.broker, "expires_finished", True) or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + 3600
        retention = float(_settings.BROKER_RETENTION_SECONDS.value())
        if retention <= 0:
            return
        try:
            pruned = await anyio.to_thread.run_sync(self.broker.prune, retention)
        except Exception as exc:
            log(WARNING, _WHERE, f"Worker {self.worker_id}: could not prune finished runs: {exc!r}")
            return
        if pruned:
            log(INFO, _WHERE, f"Pruned {pruned} finished run(s) older than {retention:g} s from {self.broker!r} "
                f"(ASYNCFLOW_BROKER_RETENTION_SECONDS)")

    async def _drain(self) -> None:
        with anyio.move_on_after(self.shutdown_timeout):
            if self._running:
                self._all_done = anyio.Event()
                await self._all_done.wait()
        for run_id, scope in list(self._running.items()):  # not done in time: hand them back
            scope.cancel()
            try:
                await anyio.to_thread.run_sync(self.broker.release, run_id, self.worker_id)
            except Exception as exc:
                log(WARNING, _WHERE, f"Run {run_id} did not finish before shutdown and could not be handed back "
                    f"({exc!r}): it is delivered again when its lease expires")
                continue
            log(WARNING, _WHERE, f"Handed run {run_id} back to the queue: it did not finish before shutdown")

    async def _renew_leases(self) -> None:
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            if self._running:
                try:
                    await anyio.to_thread.run_sync(self.broker.renew, list(self._running), self.worker_id,
                                                   self.lease_seconds)
                except Exception as exc:  # the claim loop reports outages; try again at the next tick
                    self._broker_failed(exc, "renew leases")

    async def _execute(self, queued: QueuedRun, scope: anyio.CancelScope) -> None:
        task = self.tasks[queued.task_key]
        try:
            with scope:
                if queued.attempts > 1:  # delivered again: skip it if the first delivery did finish
                    outcome = await self._call_broker(self.broker.outcome, queued.id, doing=f"look up run {queued.id}")
                    if outcome is not None and outcome.finished:
                        return
                try:
                    finish = await self._run(queued, task)
                except Exception as exc:  # a damaged payload, an upstream that failed to load, a bug
                    if isinstance(exc, BrokerDataError):
                        log(ERROR, _WHERE, f"Run {queued.id} of {task.name!r} could not be executed: {exc}")
                        message = str(exc)
                    else:
                        log(ERROR, _WHERE, f"Run {queued.id} of {task.name!r} could not be executed: {exc!r}",
                            exc_info=exc)
                        message = f"The worker could not execute the run: {exc!r}"
                    finish = ("FAILED", "Failed", message, _dumps(exc, queued.id))
                    _record(task, queued.id, finish[0], finish[1], message)
                await self._finish(queued, *finish)
        finally:
            self._running.pop(queued.id, None)
            if not self._running and self._all_done is not None:
                self._all_done.set()

    async def _run(self, queued: QueuedRun, task: Any) -> tuple[str, str, str | None, bytes | None]:
        """Execute the run; its outcome as (state type, state name, message, sealed result)."""
        parameters, waits = load_payload(queued, task.name)
        blocked = await self._wait_for(waits)
        if blocked is not None:
            _record(task, queued.id, "PENDING", "NotReady", blocked)
            return "PENDING", "NotReady", blocked, None
        parameters = {name: (await value if isinstance(value, DelayedFuture) else value)
                      for name, value in parameters.items()}
        try:
            await anyio.to_thread.run_sync(self.broker.set_state, queued.id, self.worker_id, "RUNNING", "Running")
        except Exception as exc:  # only futures see it meanwhile: run it anyway
            self._broker_failed(exc, f"mark run {queued.id} Running")
        call = TaskCall(task, parameters, None, submitted=False, run_id=uuid.UUID(queued.id))
        state = await run_task(call, AWAITING)
        try:
            return state.type.value, state.name, state.message, seal(cloudpickle.dumps(state.data), "result", queued.id)
        except Exception as exc:
            if state.type is not StateType.COMPLETED:
                return state.type.value, state.name, state.message, _dumps(RuntimeError(repr(state.data)), queued.id)
            error = TypeError(f"Task {task.name!r} returned a value of type {type(state.data).__name__} that cannot "
                              f"be sent back through the broker: {exc}")
            return "FAILED", "Failed", str(error), _dumps(error, queued.id)

    async def _wait_for(self, waits: list[str]) -> str | None:
        for run_id in waits:
            future = DelayedFuture(run_id, self.broker)
            await future.wait_async()
            if not future.state.is_completed():
                return f"Upstream task run '{run_id}' did not reach a 'COMPLETED' state."
        return None

    async def _finish(self, queued: QueuedRun, state_type: str, state_name: str, message: str | None,
                      payload: bytes | None) -> None:
        """Record the outcome, retrying while the broker is away (a run's outcome is not given up). The
        run's states are written to the store first: a worker killed once the outcome is out cannot leave
        the run's history without its end (and the next process to open the store mark it Crashed)."""
        await anyio.to_thread.run_sync(_flush_store)
        first = await self._call_broker(self.broker.complete, queued.id, self.worker_id, state_type, state_name,
                                        message, payload, doing=f"record the outcome of run {queued.id}")
        if first:
            self.completed += 1
        else:  # delivered twice (our lease had expired): the first outcome stands
            log(WARNING, _WHERE, f"Run {queued.id} had already been completed by another worker; keeping that outcome")


def _flush_store() -> None:
    from .._store import flush

    try:
        flush()
    except Exception as exc:  # the store degrades on its own; the outcome goes on
        log(WARNING, _WHERE, f"Could not write the run store before recording an outcome: {exc!r}")


def _record(task: Any, run_id: str, state_type: str, state_name: str, message: str) -> None:
    """The final state of a run the engine did not run (its payload failed, its upstream did not
    complete), for the run store's history (the run itself too: this store may not have it, e.g. with
    Redis across machines; a run recorded again keeps its row); best effort, as all recording."""
    from .._states import State
    from .._store import get_store

    try:
        call = TaskCall(task, {}, None, submitted=False, run_id=uuid.UUID(run_id))
        state: Any = State(StateType(state_type), state_name, message, None, call.details)
        call.run.state = state
        get_store().record_task_run(call.run, state)
    except Exception as exc:
        log(WARNING, _WHERE, f"Could not record the {state_name} state of run {run_id}: {exc!r}")


def load_payload(queued: QueuedRun, task_name: str) -> tuple[dict[str, Any], list[str]]:
    """The run's (parameters, wait_for ids), or BrokerDataError saying what is wrong with the payload."""
    where = f"task run {queued.id} (task {task_name!r})"
    try:
        raw = unseal(queued.payload, "payload", queued.id)
    except DamagedBlob as exc:
        raise BrokerDataError(f"The queued payload (the arguments) of {where} is damaged: {exc}. The run was not "
                              f"executed; delay it again.") from None
    try:
        value = cloudpickle.loads(raw)
    except Exception as exc:
        raise BrokerDataError(f"The arguments of {where} cannot be loaded in this worker: {type(exc).__name__}: "
                              f"{exc}. The classes of the arguments must be importable where the worker runs.") from exc
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], dict)
            and all(isinstance(name, str) for name in value[0]) and isinstance(value[1], list)
            and all(isinstance(run_id, str) and _is_uuid(run_id) for run_id in value[1])):
        raise BrokerDataError(f"The queued payload of {where} is not what .delay() writes (parameters and the ids "
                              f"of the runs to wait for): it was written by another program. The run was not executed.")
    return value[0], value[1]


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _dumps(exc: BaseException, run_id: str) -> bytes:
    """An exception as a sealed result (a plain RuntimeError with its repr if it cannot be pickled)."""
    try:
        data = cloudpickle.dumps(exc)
    except Exception:
        data = cloudpickle.dumps(RuntimeError(repr(exc)))
    return seal(data, "result", run_id)


def _lease_setting() -> float:
    setting = getattr(_settings, "TASK_WORKER_LEASE_SECONDS", None)
    return float(setting.value()) if setting is not None else 30.0


async def serve_async(*tasks: Any, limit: int | None = 10, **options: Any) -> None:
    """Serve tasks inside your own event loop (for example in a web app's lifespan) until cancelled."""
    worker = TaskWorker(*tasks, limit=limit, **options)
    await worker.start()


def serve(*tasks: Any, limit: int | None = 10, **options: Any) -> None:
    """Serve tasks until SIGTERM or SIGINT (Ctrl-C): then finish or hand back what is running, and exit."""
    worker = TaskWorker(*tasks, limit=limit, **options)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log(INFO, _WHERE, f"Received {signal.Signals(signum).name}: stopping gracefully")
                        worker.stop()
                        return

            tg.start_soon(stop_on_signal)
            await worker.start()
            tg.cancel_scope.cancel()

    anyio.run(main)
