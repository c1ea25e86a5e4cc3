"""Helpers shared by the test modules."""

from __future__ import annotations

import threading
from typing import Any

import anyio.lowlevel
import pytest

from asyncflow import task


def run_in_thread(fn: Any, *args: Any, timeout: float = 60.0) -> Any:
    """Run `fn(*args)` in a daemon thread; fail the test (instead of hanging) if it does not finish within
    `timeout` seconds: a hang guard, generous enough for a loaded machine, never a performance bound."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not finish within {timeout} s (deadlock?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def add_async(a: int, b: int) -> int:
    await anyio.lowlevel.checkpoint()
    return a + b
