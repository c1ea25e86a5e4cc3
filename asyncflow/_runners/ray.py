"""`RayTaskRunner`: submitted task runs execute as Ray tasks (extra `ray`).

Prefect's constructor shape (`prefect_ray.RayTaskRunner`): `address` of an existing cluster (or
`"auto"`), and `init_kwargs` for `ray.init`. With no address, a local Ray instance is started when the
flow run starts and shut down when it ends; if Ray is already initialized in this process, the runner
uses that connection and leaves it open.

Only the work item travels (`execute_payload.remote(packed_item)`); the engine stays in the flow's
process and records every state. At most as many runs are in flight on Ray as the cluster has CPUs
(read when the flow run starts); the others wait in the flow's process. `timeout_seconds`: the
worker stops the function in its thread at the deadline, counted from when it started there, and
answers `TimedOut` at once; if no answer has come `KILL_GRACE_SECONDS` after the deadline (C code
holding the worker's GIL, a worker that could not start), the Ray task is force-cancelled, which kills
the worker process running it (a hard limit; Ray starts another). The grace covers Ray's scheduling
and worker start-up, which the flow's process cannot see. Ray's own retries are off
(`max_retries=0`): asyncflow's retries are the task's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import ray

from .._exceptions import TaskRunTimeoutError
from ..task_runners import RunnerOptions, TaskRunner
from .remote import Arrival, blocking, frozen_mapping, shielded
from .work import Capabilities, Outcome, WorkerDiedError, WorkItem, execute_payload, failure


@attrs.frozen
class RayOptions(RunnerOptions):
    address: str | None = None
    init_kwargs: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_mapping)

    def __attrs_post_init__(self) -> None:
        if "address" in self.init_kwargs:
            raise ValueError("RayTaskRunner: give the cluster's address as `address`, not in `init_kwargs`.")


KILL_GRACE_SECONDS = 10.0  # after the deadline: the worker's own answer, else the worker is killed
_remote_fn: Any = None


def _remote() -> Any:
    global _remote_fn
    if _remote_fn is None:
        _remote_fn = ray.remote(max_retries=0)(execute_payload)
    return _remote_fn


class RayTaskRunner(TaskRunner):
    """Submitted runs, sync and async, execute as Ray tasks: on a local Ray instance started for the
    flow run by default, or on the cluster at `address`."""

    capabilities = Capabilities(async_tasks=True, remote=True, enforces_timeouts=True)

    def __init__(self, address: str | None = None, init_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.options = RayOptions(address, init_kwargs or {})

    def _reset(self) -> None:
        super()._reset()
        self._started_ray = False
        self._cpus = 1
        self._slots: tuple[Any, anyio.CapacityLimiter] | None = None  # (event loop, limiter)

    def _in_flight(self) -> anyio.CapacityLimiter:
        """The limiter of the current event loop (a sync flow's retry runs on a new helper loop)."""
        token = anyio.lowlevel.current_token()
        if self._slots is None or self._slots[0] != token:
            self._slots = (token, anyio.CapacityLimiter(self._cpus))
        return self._slots[1]

    async def start(self) -> None:
        await blocking(self._connect)

    def _connect(self) -> None:
        if not ray.is_initialized():  # (a process already connected uses that connection, left open)
            kwargs = dict(self.options.init_kwargs)
            if self.options.address is not None:
                kwargs["address"] = self.options.address
            ray.init(**kwargs)
            self._started_ray = True
        self._cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))

    async def shutdown(self) -> None:
        if self._started_ray:
            self._started_ray = False
            await blocking(ray.shutdown)

    async def submit(self, item: WorkItem) -> Outcome:
        async with self._in_flight():
            return await self._submit(item)

    async def _submit(self, item: WorkItem) -> Outcome:
        payload = item.pack()
        arrival = Arrival()
        ref = _remote().remote(payload)
        ref.future().add_done_callback(lambda done: arrival.deliver(_result_of(done)))
        try:
            limit = item.timeout + KILL_GRACE_SECONDS if item.timeout else float("inf")
            with anyio.move_on_after(limit) as deadline:
                answer = await arrival.wait()
        except BaseException:  # cancelled (its flow ended): stop it where it runs
            await shielded(_force_cancel, ref)
            raise
        if deadline.cancelled_caught:
            await shielded(_force_cancel, ref)
            return failure(TaskRunTimeoutError(
                f"Task run exceeded timeout of {item.timeout:g} second(s); its Ray worker had not stopped it "
                f"{KILL_GRACE_SECONDS:g} s after the deadline (C code holding the GIL?), so its Ray task was "
                f"force-cancelled, which kills the worker process running it (a hard limit; Ray starts a fresh "
                f"worker)"))
        if isinstance(answer, BaseException):
            return failure(WorkerDiedError(f"Ray could not run task {item.label!r}: {type(answer).__name__}: {answer}"))
        import cloudpickle

        outcome: Outcome = cloudpickle.loads(answer)
        return outcome


def _force_cancel(ref: Any) -> None:
    with contextlib.suppress(Exception):  # already finished
        ray.cancel(ref, force=True)


def _result_of(future: Any) -> Any:
    try:
        return future.result()
    except BaseException as exc:
        return exc
