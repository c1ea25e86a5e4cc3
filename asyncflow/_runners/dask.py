"""`DaskTaskRunner`: submitted task runs execute on a Dask cluster (extra `dask`: `distributed`).

Prefect's constructor shape (`prefect_dask.DaskTaskRunner`): `address` of an existing scheduler, or a
temporary cluster made from `cluster_class(**cluster_kwargs)` (default `distributed.LocalCluster`),
scaled with `cluster.adapt(**adapt_kwargs)` if given; `client_kwargs` go to `distributed.Client`.
The cluster or the connection is made when the flow run starts and closed when it ends (a temporary
cluster with it).

Only the work item travels: `client.submit(execute_payload, packed_item)`; the engine stays in the
flow's process and records every state. Timeouts: the worker stops the function in its thread at the
deadline, counted from when the worker started it (as asyncflow does in-process), and answers
`TimedOut` at once; Dask cannot kill a task, so C code that holds the worker's GIL past the deadline
delays that answer until it returns (its result is then discarded). Runs queue on the cluster, so
the flow sets no deadline of its own: it could not tell a queued run from a running one.
Work whose worker dies is rescheduled by Dask itself (`distributed.scheduler.allowed-failures`);
asyncflow's retries are the task's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import distributed

from ..task_runners import RunnerOptions, TaskRunner
from .remote import Arrival, blocking, frozen_mapping, resolve_qualified, shielded
from .work import Capabilities, Outcome, WorkerDiedError, WorkItem, execute_payload, failure


@attrs.frozen
class DaskOptions(RunnerOptions):
    address: str | None = None
    cluster_class: str | Callable[..., Any] | None = None
    cluster_kwargs: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_mapping)
    adapt_kwargs: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_mapping)
    client_kwargs: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_mapping)

    def __attrs_post_init__(self) -> None:
        if self.address is not None and (self.cluster_class is not None or self.cluster_kwargs or self.adapt_kwargs):
            raise ValueError("DaskTaskRunner: give either `address` (an existing scheduler) or "
                             "`cluster_class`/`cluster_kwargs`/`adapt_kwargs` (a temporary cluster), not both.")
        for name in ("cluster_kwargs", "client_kwargs"):
            if "asynchronous" in getattr(self, name):
                raise ValueError(f"DaskTaskRunner: `{name}` cannot set `asynchronous`; asyncflow manages it.")


class DaskTaskRunner(TaskRunner):
    """Submitted runs, sync and async, execute on a Dask cluster: a temporary `LocalCluster` by
    default, or the scheduler at `address`."""

    capabilities = Capabilities(async_tasks=True, remote=True, enforces_timeouts=True)

    def __init__(self, cluster_class: str | Callable[..., Any] | None = None,
                 cluster_kwargs: Mapping[str, Any] | None = None, adapt_kwargs: Mapping[str, Any] | None = None,
                 client_kwargs: Mapping[str, Any] | None = None, address: str | None = None) -> None:
        super().__init__()
        self.options = DaskOptions(address, cluster_class, cluster_kwargs or {}, adapt_kwargs or {},
                                   client_kwargs or {})

    def _reset(self) -> None:
        super()._reset()
        self._client: Any = None
        self._cluster: Any = None  # the temporary cluster this runner made (closed with it)

    @property
    def client(self) -> Any:
        """The `distributed.Client` of the current flow run (None outside its lifecycle)."""
        return self._client

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        await blocking(self._connect)

    def _connect(self) -> None:
        options = self.options
        client_kwargs = dict(options.client_kwargs)
        if options.address is not None:
            self._client = distributed.Client(options.address, **client_kwargs)
            return
        cluster_class = resolve_qualified(options.cluster_class) or distributed.LocalCluster
        self._cluster = cluster_class(**dict(options.cluster_kwargs))
        try:
            if options.adapt_kwargs:
                self._cluster.adapt(**dict(options.adapt_kwargs))
            self._client = distributed.Client(self._cluster, **client_kwargs)
        except BaseException:
            self._cluster.close()
            self._cluster = None
            raise

    async def shutdown(self) -> None:
        await blocking(self._close)

    def _close(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    # -- executing work -------------------------------------------------------------------------------
    async def submit(self, item: WorkItem) -> Outcome:
        client = self._client
        if client is None:
            raise RuntimeError("DaskTaskRunner: the runner is not started (it runs inside its flow run).")
        payload = item.pack()
        arrival = Arrival()
        key = f"{item.label or 'task'}-{uuid.uuid4().hex}"
        future = client.submit(execute_payload, payload, key=key, pure=False)
        client.loop.add_callback(_fetch, client, future, arrival)  # waits and fetches on the client's loop
        try:
            answer = await arrival.wait()
        except BaseException:  # cancelled (its flow ended): the cluster drops the work if it can
            await shielded(future.cancel)
            raise
        if isinstance(answer, BaseException):
            return failure(WorkerDiedError(
                f"Dask could not run task {item.label!r}: {type(answer).__name__}: {answer}"))
        import cloudpickle

        outcome: Outcome = cloudpickle.loads(answer)
        return outcome


async def _fetch(client: Any, future: Any, arrival: Arrival) -> None:
    """On the client's own event loop (no thread hop per result): the packed outcome once it is
    ready, or why there is none (a lost worker, a cancelled key...)."""
    try:
        answer: Any = await client.gather(future, asynchronous=True)
    except BaseException as exc:
        answer = exc
    arrival.deliver(answer)
