"""`ProcessPoolTaskRunner`: submitted task runs execute in worker processes, with hard timeouts.

Each flow run's runner owns up to `max_workers` processes, started when a run first needs one (a
flow that submits nothing starts none) and stopped when the flow run ends. A worker takes one packed
`WorkItem` at a time over its own pipe and answers with a packed `Outcome`.

The event loop never blocks on a worker: it waits for the pipe to become readable. So the loop can
kill a worker whose run is still going at its deadline: the process is killed (SIGKILL, which no code
can ignore, C code that holds the GIL included), the run ends `TimedOut` with a message saying so, and
a fresh process replaces it for the next run. A worker that dies on its own (a crash, `os._exit`, the
OOM killer) fails only the run it held (`WorkerDiedError`): retries go to another process.
A cancelled run (its flow failed, timed out or was cancelled) has its worker killed the same way.

Workers are fresh interpreters (`python -m asyncflow._runners.process_worker`, no inherited threads or
locks), given this process's `sys.path`; unlike `multiprocessing`'s spawn they do not re-import the
main script, so a script needs no `if __name__ == "__main__":` guard. The task's function and
arguments travel by pickle (cloudpickle): a function defined in `__main__` or a test module travels by
value, and anything it refers to by module name must be importable in the worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections import deque
from typing import Any

import anyio
import anyio.to_thread
import attrs

from .._exceptions import TaskRunTimeoutError
from ..task_runners import RunnerOptions, TaskRunner
from .remote import blocking as _blocking
from .work import Capabilities, Outcome, WorkerDiedError, WorkItem, failure

_STARTUP_SECONDS = 120.0  # a worker that has not said it is ready by then failed to start
_READY = b"ready"
_BIG_PAYLOAD = 32 * 1024  # larger payloads are written from a thread (the pipe holds 64 KiB)


def _max_workers(_: Any, attribute: Any, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_workers must be a positive integer or None (the number of CPUs); got {value!r}.")


@attrs.frozen
class ProcessPoolOptions(RunnerOptions):
    max_workers: int | None = attrs.field(default=None, validator=_max_workers)


class _Worker:
    __slots__ = ("process", "conn", "pid")

    def __init__(self, process: Any, conn: Any) -> None:
        self.process = process
        self.conn = conn
        self.pid = process.pid

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(5)
        except Exception:
            pass
        self.close_pipe()

    def stop(self) -> None:
        """Ask an idle worker to exit (EOF on its pipe), then make sure it did."""
        self.close_pipe()
        try:
            self.process.wait(2)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()  # type: ignore[no-any-return]

    def close_pipe(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class _Waiter:
    __slots__ = ("event", "worker", "may_start")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.worker: _Worker | None = None
        self.may_start = False


class ProcessPoolTaskRunner(TaskRunner):
    """Submitted runs, sync and async, execute in up to `max_workers` worker processes (default: the
    number of CPUs); `timeout_seconds` is a hard limit (the worker is killed and replaced)."""

    capabilities = Capabilities(async_tasks=True, remote=True, enforces_timeouts=True, kills_at_deadline=True)

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        self.options = ProcessPoolOptions(max_workers)

    @property
    def max_workers(self) -> int:
        return self.options.max_workers or os.cpu_count() or 1  # type: ignore[no-any-return]

    def _reset(self) -> None:
        super()._reset()
        self._idle: list[_Worker] = []
        self._workers: set[Any] = set()  # live workers and reservations for those being started
        self._waiters: deque[_Waiter] = deque()
        self._closed = False
        self._lock = threading.Lock()  # `shutdown` may run in another thread than the runs

    # -- lifecycle ------------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            workers = [w for w in self._workers if isinstance(w, _Worker)]
            self._workers.clear()
            self._idle.clear()
        if workers:
            await _blocking(_stop_all, workers)

    # -- executing work -------------------------------------------------------------------------------
    async def submit(self, item: WorkItem) -> Outcome:
        payload = item.pack()
        worker = await self._acquire()
        try:
            try:
                if len(payload) > _BIG_PAYLOAD:
                    await anyio.to_thread.run_sync(worker.conn.send_bytes, payload)
                else:
                    worker.conn.send_bytes(payload)
            except OSError:  # an idle worker that died meanwhile: nothing of the run was done
                code = await self._discard(worker, kill=True)
                return failure(WorkerDiedError(
                    f"The worker process {worker.pid} for task {item.label!r} had exited before the run was sent "
                    f"(exit code {code}: {_describe_exit(code)}); it is replaced by a fresh process"),
                    f"pid {worker.pid}")
            with anyio.move_on_after(item.timeout if item.timeout else float("inf")) as deadline:
                await anyio.wait_readable(worker.conn.fileno())
            if deadline.cancelled_caught:
                await self._discard(worker, kill=True)
                return failure(TaskRunTimeoutError(
                    f"Task run exceeded timeout of {item.timeout:g} second(s); it was still running in worker "
                    f"process {worker.pid}, which was killed at the deadline (ProcessPoolTaskRunner enforces "
                    f"timeout_seconds as a hard limit) and is replaced by a fresh process"), f"pid {worker.pid}")
            try:
                answer = worker.conn.recv_bytes()
            except (EOFError, OSError):
                code = await self._discard(worker, kill=False)
                return failure(WorkerDiedError(
                    f"The worker process {worker.pid} running task {item.label!r} exited before it returned "
                    f"(exit code {code}: {_describe_exit(code)}); it is replaced by a fresh process"),
                    f"pid {worker.pid}")
        except BaseException:  # cancelled (its flow ended), or the pipe broke: the worker cannot be trusted
            with anyio.CancelScope(shield=True):
                await self._discard(worker, kill=True)
            raise
        self._release(worker)
        import cloudpickle

        outcome: Outcome = cloudpickle.loads(answer)
        return outcome

    # -- the pool -------------------------------------------------------------------------------------
    async def _acquire(self) -> _Worker:
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError("ProcessPoolTaskRunner: the runner was shut down (its flow run ended).")
                if self._idle:
                    return self._idle.pop()
                start = len(self._workers) < self.max_workers
                if start:
                    reservation = object()
                    self._workers.add(reservation)
            if start:
                try:
                    worker = await self._start_worker()
                except BaseException:
                    with self._lock:
                        self._workers.discard(reservation)
                    self._wake_one_to_start()
                    raise
                with self._lock:
                    self._workers.discard(reservation)
                    if self._closed:
                        closed = True
                    else:
                        closed = False
                        self._workers.add(worker)
                if closed:
                    await _blocking(worker.stop)
                    continue
                return worker
            waiter = _Waiter()
            self._waiters.append(waiter)
            try:
                await waiter.event.wait()
            except BaseException:
                if waiter.worker is not None:  # handed a worker as it was cancelled: pass it on
                    self._release(waiter.worker)
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.may_start:
                    self._wake_one_to_start()
                raise
            if waiter.worker is not None:
                return waiter.worker
            # woken because a worker went away: loop, and start its replacement

    def _release(self, worker: _Worker) -> None:
        """A worker is free again: straight to the first waiting run, else to the idle list."""
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.worker = worker
            waiter.event.set()
            return
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.stop()

    def _wake_one_to_start(self) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.may_start = True
            waiter.event.set()

    async def _discard(self, worker: _Worker, kill: bool) -> Any:
        """A worker that ran out of time, died or was abandoned: kill it, free its place."""
        with self._lock:
            self._workers.discard(worker)
        await _blocking(worker.kill if kill else worker.stop)
        self._wake_one_to_start()
        return worker.exitcode

    async def _start_worker(self) -> _Worker:
        worker = await anyio.to_thread.run_sync(_spawn)
        try:
            with anyio.fail_after(_STARTUP_SECONDS):
                await anyio.wait_readable(worker.conn.fileno())
            ready = worker.conn.recv_bytes()
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await _blocking(worker.kill)
            if isinstance(exc, Exception):
                raise WorkerDiedError(
                    f"ProcessPoolTaskRunner could not start a worker process ({type(exc).__name__}: {exc}; exit "
                    f"code {worker.exitcode})") from exc
            raise
        if ready != _READY:
            await _blocking(worker.kill)
            raise WorkerDiedError(f"ProcessPoolTaskRunner: a worker process answered {ready!r} when it started.")
        return worker


def _spawn() -> _Worker:
    from multiprocessing.connection import Connection

    import cloudpickle

    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "asyncflow._runners.process_worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    conn.send_bytes(cloudpickle.dumps({"sys_path": list(sys.path), "cwd": os.getcwd()}))
    return _Worker(process, conn)


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.close_pipe()  # all at once: each exits on EOF
    for worker in workers:
        worker.stop()


def _describe_exit(code: Any) -> str:
    if code is None:
        return "still running"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return "exited"
