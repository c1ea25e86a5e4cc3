"""`RayTaskRunner`: submitted task runs execute as Ray tasks (extra `ray`).

Prefect's constructor shape (`prefect_ray.RayTaskRunner`): `address` of an existing cluster (or
`"auto"`), and `init_kwargs` for `ray.init`. With no address, a local Ray instance is started when the
flow run starts and shut down when it ends; if Ray is already initialized in this process, the runner
uses that connection and leaves it open.

Only the work item travels (`execute_payload.remote(packed_item)`); the engine stays in the flow's
process and records every state. `timeout_seconds` is a hard limit: at the deadline the Ray task is
force-cancelled, which kills the worker process running it (Ray starts another). Ray's own retries
are off (`max_retries=0`): asyncflow's retries are the task's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
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


_remote_fn: Any = None


def _remote() -> Any:
    global _remote_fn
    if _remote_fn is None:
        _remote_fn = ray.remote(max_retries=0)(execute_payload)
    return _remote_fn


class RayTaskRunner(TaskRunner):
    """Submitted runs, sync and async, execute as Ray tasks: on a local Ray instance started for the
    flow run by default, or on the cluster at `address`."""

    capabilities = Capabilities(async_tasks=True, remote=True, enforces_timeouts=True, kills_at_deadline=True)

    def __init__(self, address: str | None = None, init_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.options = RayOptions(address, init_kwargs or {})

    def _reset(self) -> None:
        super()._reset()
        self._started_ray = False

    async def start(self) -> None:
        await blocking(self._connect)

    def _connect(self) -> None:
        if ray.is_initialized():  # this process is already connected: use it, leave it open
            return
        kwargs = dict(self.options.init_kwargs)
        if self.options.address is not None:
            kwargs["address"] = self.options.address
        ray.init(**kwargs)
        self._started_ray = True

    async def shutdown(self) -> None:
        if self._started_ray:
            self._started_ray = False
            await blocking(ray.shutdown)

    async def submit(self, item: WorkItem) -> Outcome:
        payload = item.pack()
        arrival = Arrival()
        ref = _remote().remote(payload)
        ref.future().add_done_callback(lambda done: arrival.deliver(_result_of(done)))
        try:
            with anyio.move_on_after(item.timeout if item.timeout else float("inf")) as deadline:
                answer = await arrival.wait()
        except BaseException:  # cancelled (its flow ended): stop it where it runs
            await shielded(_force_cancel, ref)
            raise
        if deadline.cancelled_caught:
            await shielded(_force_cancel, ref)
            return failure(TaskRunTimeoutError(
                f"Task run exceeded timeout of {item.timeout:g} second(s); it was still running at the deadline, "
                f"so its Ray task was force-cancelled, which kills the worker process running it (a hard limit; "
                f"Ray starts a fresh worker)"))
        if isinstance(answer, BaseException):
            return failure(WorkerDiedError(f"Ray could not run task {item.label!r}: {type(answer).__name__}: {answer}"))
        import cloudpickle

        outcome: Outcome = cloudpickle.loads(answer)
        return outcome


def _force_cancel(ref: Any) -> None:
    try:
        ray.cancel(ref, force=True)
    except Exception:  # already finished
        pass


def _result_of(future: Any) -> Any:
    try:
        return future.result()
    except BaseException as exc:
        return exc
