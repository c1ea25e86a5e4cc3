"""The clock seam: the engine reads time and sleeps through here, so tests can use a fake clock."""

from __future__ import annotations

import time

import anyio


class Clock:
    """Real time. `asyncflow.testing.FakeClock` replaces it in tests."""

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def sleep_blocking(self, seconds: float) -> None:
        time.sleep(seconds)


_clock: Clock = Clock()


def get_clock() -> Clock:
    return _clock


def set_clock(clock: Clock) -> Clock:
    """Install `clock`; returns the previous one."""
    global _clock
    previous, _clock = _clock, clock
    return previous
