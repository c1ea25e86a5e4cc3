"""Retry policy: how many retries, how long to wait before each, and whether to retry at all."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from .._callables import ONE_DAY, _short, check_count, check_seconds
from .._values import Frozen, Record, ValueEq

MAX_DELAYS = 50


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Retry delays `backoff_factor * 2**i`: with factor 10 and 3 retries, 10, 20 and 40 seconds."""

    def retry_backoff_callable(retries: int) -> list[float]:
        return [backoff_factor * 2**i for i in range(min(retries, MAX_DELAYS))]

    return retry_backoff_callable


def clamped_poisson_interval(average: float, clamping_factor: float) -> float:
    """A random delay with mean ≈ `average`, never above `average * (1 + clamping_factor)`.

    An exponential draw with mean `average`, kept within `[average * c, average * (1 + factor)]` where
    `c = log2(2**k / (2**k - 1))`, `k = 1 + factor` (Prefect's bounds). It is drawn directly from that
    truncated distribution by inverting its CDF, so it takes the same time for any factor: a rejection
    loop (draw until the value falls in the window) ran for hours when a tiny factor made the window tiny."""
    upper = average * (1 + clamping_factor)
    k = 1 + clamping_factor
    lower = average * math.log2(2**k / (2**k - 1))
    high, low = math.exp(-lower / average), math.exp(-upper / average)  # survival function at the bounds
    value = -average * math.log(random.uniform(low, high))
    return min(max(value, lower), upper)  # rounding must not step outside the window


class RetryPolicy(Frozen, ValueEq, Record):
    """A task's or flow's retry options, validated (`build_retry_policy`). Frozen, compared by value."""

    __slots__ = ("retries", "delays", "jitter_factor", "condition_fn")
    retries: int
    delays: tuple[float, ...]
    jitter_factor: float | None
    condition_fn: Callable[..., Any] | None

    def __init__(self, retries: int = 0, delays: tuple[float, ...] = (), jitter_factor: float | None = None,
                 condition_fn: Callable[..., Any] | None = None) -> None:
        self._set_fields(retries, delays, jitter_factor, condition_fn)

    def delay_for(self, attempt_index: int) -> float:
        """Seconds to wait before retry number `attempt_index + 1` (the last delay repeats)."""
        if not self.delays:
            return 0.0
        delay = self.delays[min(attempt_index, len(self.delays) - 1)]
        if delay > 0 and self.jitter_factor:
            delay = clamped_poisson_interval(delay, self.jitter_factor)
        return delay


MAX_RETRY_DELAY_SECONDS = ONE_DAY
MAX_RETRY_JITTER_FACTOR = 10


def build_retry_policy(owner: str, retries: Any, retry_delay_seconds: Any, jitter: Any, condition_fn: Any,
                       default_retries: int, default_delay: Any) -> RetryPolicy:
    """Validate retry options at decoration time; every error names the option and the fix."""
    retries = check_count(owner, "retries", default_retries if retries is None else retries)
    if retry_delay_seconds is None:
        retry_delay_seconds = default_delay
    if callable(retry_delay_seconds):
        try:
            retry_delay_seconds = retry_delay_seconds(retries)
        except Exception as exc:
            raise TypeError(
                f"{owner}: the `retry_delay_seconds` callable {retry_delay_seconds!r} raised "
                f"{type(exc).__name__}: {exc}. It is called once, at definition, with the number of retries "
                "and must return a list of delays in seconds (like exponential_backoff(backoff_factor=10))."
            ) from exc
    if isinstance(retry_delay_seconds, bool) or not isinstance(retry_delay_seconds, (int, float, Sequence)) \
            or isinstance(retry_delay_seconds, (str, bytes)):
        raise TypeError(
            f"Invalid `retry_delay_seconds` provided for {owner}; must be a number, a list of numbers or a "
            f"callable returning a list of numbers; got {type(retry_delay_seconds).__name__}.")
    if isinstance(retry_delay_seconds, (int, float)):
        delays = [retry_delay_seconds]
    else:
        try:
            count = len(retry_delay_seconds)
        except OverflowError:  # range(10**19)
            count = MAX_DELAYS + 1
        if count > MAX_DELAYS:
            raise ValueError(f"{owner}: `retry_delay_seconds` can not configure more than {MAX_DELAYS} retry "
                             f"delays per task; got {count if count <= 10**6 else 'far more'}.")
        delays = list(retry_delay_seconds)
    for delay in delays:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            raise TypeError(f"Invalid `retry_delay_seconds` provided for {owner}: {_short(delay)} is not a "
                            f"number.")
        check_seconds(owner, "retry_delay_seconds", delay, MAX_RETRY_DELAY_SECONDS)
    if jitter is not None:
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
            raise TypeError(f"{owner}: `retry_jitter_factor` must be a number (each delay is drawn at random "
                            f"up to delay * (1 + factor)); got {_short(jitter)}.")
        finite = isinstance(jitter, int) or math.isfinite(jitter)  # 2**1024 must not reach float()
        if not finite or not 0 <= jitter <= MAX_RETRY_JITTER_FACTOR:
            raise ValueError(f"{owner}: `retry_jitter_factor` must be a finite number from 0 to "
                             f"{MAX_RETRY_JITTER_FACTOR} (each delay is drawn at random up to delay * (1 + "
                             f"factor)); got {_short(jitter)}.")
    if condition_fn is not None and not callable(condition_fn):
        raise TypeError(
            f"{owner}: `retry_condition_fn` must be a callable `(task, task_run, state) -> bool`; "
            f"got {type(condition_fn).__name__}.")
    return RetryPolicy(retries, tuple(float(d) for d in delays), jitter, condition_fn)
