"""Task workers: claim delayed runs from the broker and execute them like any run (retries,
timeouts, caching and hooks apply), holding a lease that they renew while the run is alive."""

from __future__ import annotations

import os
import signal
import socket
import uuid
from typing import Any

import anyio
import anyio.to_thread
import cloudpickle

from .. import _settings
from .._engine.bridge import AWAITING
from .._engine.task_run import TaskCall, run_task
from .._logging import ERROR, INFO, WARNING, log
from .._states import StateType
from .broker import QueuedRun, get_broker
from .future import DelayedFuture

_WHERE = "asyncflow.task_worker"


class TaskWorker:
    """Runs the given tasks' delayed runs, at most `limit` at a time (None: no limit)."""

    def __init__(self, *tasks: Any, limit: int | None = 10, broker: Any = None, lease_seconds: float | None = None,
                 poll_interval: float = 0.05, shutdown_timeout: float = 10.0) -> None:
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
        self.completed = 0

    def stop(self) -> None:
        """Stop taking runs; runs in progress get `shutdown_timeout` seconds to finish, then are handed back."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        log(INFO, _WHERE, f"Worker {self.worker_id} serving {sorted(t.name for t in self.tasks.values())}")
        keys = list(self.tasks)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._renew_leases)
            delay = self.poll_interval / 8
            while not self._stopping:
                room = (self.limit - len(self._running)) if self.limit is not None else 100
                claimed = []
                if room > 0:
                    claimed = await anyio.to_thread.run_sync(
                        self.broker.claim, keys, self.worker_id, self.lease_seconds, room)
                for queued in claimed:
                    scope = anyio.CancelScope()
                    self._running[queued.id] = scope
                    tg.start_soon(self._execute, queued, scope)
                if claimed:
                    delay = self.poll_interval / 8
                    await anyio.lowlevel.checkpoint()
                    continue
                self._wake = anyio.Event()
                with anyio.move_on_after(delay):
                    await self._wake.wait()
                delay = min(delay * 2, self.poll_interval)
            await self._drain()
            tg.cancel_scope.cancel()
        log(INFO, _WHERE, f"Worker {self.worker_id} stopped after {self.completed} run(s)")

    async def _drain(self) -> None:
        with anyio.move_on_after(self.shutdown_timeout):
            if self._running:
                self._all_done = anyio.Event()
                await self._all_done.wait()
        for run_id, scope in list(self._running.items()):  # not done in time: hand them back
            scope.cancel()
            await anyio.to_thread.run_sync(self.broker.release, run_id, self.worker_id)
            log(WARNING, _WHERE, f"Handed run {run_id} back to the queue: it did not finish before shutdown")

    async def _renew_leases(self) -> None:
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            if self._running:
                await anyio.to_thread.run_sync(self.broker.renew, list(self._running), self.worker_id,
                                               self.lease_seconds)

    async def _execute(self, queued: QueuedRun, scope: anyio.CancelScope) -> None:
        task = self.tasks[queued.task_key]
        try:
            with scope:
                if queued.attempts > 1:  # delivered again: skip it if the first delivery did finish
                    outcome = await anyio.to_thread.run_sync(self.broker.outcome, queued.id)
                    if outcome is not None and outcome.finished:
                        return
                parameters, waits = cloudpickle.loads(queued.payload)
                blocked = await self._wait_for(waits)
                if blocked is not None:
                    await self._finish(queued, "PENDING", "NotReady", blocked, None)
                    return
                parameters = {name: (await value if isinstance(value, DelayedFuture) else value)
                              for name, value in parameters.items()}
                await anyio.to_thread.run_sync(self.broker.set_state, queued.id, self.worker_id, "RUNNING", "Running")
                call = TaskCall(task, parameters, None, submitted=False, run_id=uuid.UUID(queued.id))
                state = await run_task(call, AWAITING)
                payload = _dumps(state.data, state.type is StateType.COMPLETED, task.name)
                await self._finish(queued, state.type.value, state.name, state.message, payload)
        except Exception as exc:  # the payload could not be loaded, or an upstream failed to load
            log(ERROR, _WHERE, f"Run {queued.id} of {task.name!r} could not be executed: {exc!r}", exc_info=exc)
            await self._finish(queued, "FAILED", "Failed", f"The worker could not execute the run: {exc!r}",
                               _dumps(exc, False, task.name))
        finally:
            self._running.pop(queued.id, None)
            if not self._running and self._all_done is not None:
                self._all_done.set()

    async def _wait_for(self, waits: list[str]) -> str | None:
        for run_id in waits:
            future = DelayedFuture(run_id, self.broker)
            await future.wait_async()
            if not future.state.is_completed():
                return f"Upstream task run '{run_id}' did not reach a 'COMPLETED' state."
        return None

    async def _finish(self, queued: QueuedRun, state_type: str, state_name: str, message: str | None,
                      payload: bytes | None) -> None:
        first = await anyio.to_thread.run_sync(self.broker.complete, queued.id, self.worker_id, state_type,
                                               state_name, message, payload)
        if first:
            self.completed += 1
        else:  # delivered twice (our lease had expired): the first outcome stands
            log(WARNING, _WHERE, f"Run {queued.id} had already been completed by another worker; keeping that outcome")


def _dumps(value: Any, completed: bool, task_name: str) -> bytes:
    try:
        return cloudpickle.dumps(value)
    except Exception as exc:
        if completed:
            return cloudpickle.dumps(TypeError(
                f"Task {task_name!r} returned a value of type {type(value).__name__} that cannot be sent back: {exc}"))
        return cloudpickle.dumps(RuntimeError(repr(value)))


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
