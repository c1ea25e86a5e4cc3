"""What the Dask and Ray runners share: waiting on the event loop for a future of another engine."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import anyio.to_thread

from .._engine.loop import in_async_context, threadsafe_caller


class Arrival:
    """The outcome of a foreign future, delivered to the event loop from the engine's callback thread.

    `deliver(value_or_exception)` may be called from any thread, once; `wait()` awaits it on the loop
    that created the arrival. A delivery after the loop has gone is dropped."""

    __slots__ = ("_event", "_call_soon", "value", "arrived")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._call_soon = threadsafe_caller()
        self.value: Any = None
        self.arrived = False

    def deliver(self, value: Any) -> None:
        self.value = value
        self.arrived = True
        with contextlib.suppress(Exception):  # the loop is closed: nobody waits any more
            self._call_soon(self._event.set)

    async def wait(self) -> Any:
        await self._event.wait()
        return self.value


async def blocking(fn: Any, *args: Any) -> Any:
    """Blocking calls of a runner's own (connecting, closing): in a thread when on a loop, else here."""
    if in_async_context():
        return await anyio.to_thread.run_sync(fn, *args)
    return fn(*args)


async def shielded(fn: Any, *args: Any) -> None:
    """A blocking clean-up (cancelling the remote work) that a cancellation must not skip."""
    with anyio.CancelScope(shield=True):
        with contextlib.suppress(Exception):
            await anyio.to_thread.run_sync(fn, *args)


def frozen_mapping(value: Any) -> Any:
    """A read-only copy of a keyword dict, for a frozen options object."""
    import types

    return types.MappingProxyType(dict(value or {}))


def resolve_qualified(name: Any) -> Any:
    """`"package.module.Class"` -> the object; anything else is returned as it is."""
    if not isinstance(name, str):
        return name
    import importlib

    module_name, _, attribute = name.rpartition(".")
    if not module_name:
        raise ValueError(f"Expected a qualified name such as 'distributed.LocalCluster'; got {name!r}.")
    return getattr(importlib.import_module(module_name), attribute)
