"""asyncflow quickstart: tasks, a flow, concurrency, retries and caching — offline, in well under a second.

Run it with ``python quickstart.py``. Switching from Prefect is a change of imports: every line below
would run unchanged with ``prefect`` in place of ``asyncflow``.

What it shows:

1. concurrency: ``.map()`` fans one task out over a list and ``.submit()`` starts a run and returns a
   future at once; futures passed to another task are resolved before it starts;
2. retries: ``flaky_fetch`` fails on its first attempt and succeeds on its retry — the same task run,
   with ``AwaitingRetry`` and ``Retrying`` added to its state history;
3. caching: ``slow_lookup`` has ``cache_key_fn=task_input_hash``, so calling it a second time with the same
   input finishes in state ``Cached`` without running the function again;
4. ``log_prints=True``: ``print`` inside the flow and its tasks becomes a log line of the run.
"""

from __future__ import annotations

import time
from datetime import timedelta

from asyncflow import flow, task
from asyncflow.runtime import task_run
from asyncflow.tasks import task_input_hash

lookups_executed = 0


@task
def square(x: int) -> int:
    time.sleep(0.05)  # pretend to do I/O: the mapped runs overlap
    return x * x


@task
def total(values: list[int]) -> int:
    return sum(values)


@task(retries=1, retry_delay_seconds=0)
def flaky_fetch(source: str) -> str:
    if task_run.run_count == 1:
        raise ConnectionError(f"{source} is not answering (attempt {task_run.run_count})")
    print(f"fetched {source} on attempt {task_run.run_count}")
    return f"data from {source}"


@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=5))
def slow_lookup(key: str) -> str:
    global lookups_executed
    lookups_executed += 1
    time.sleep(0.1)  # expensive: worth caching
    return key.upper()


@flow(log_prints=True)
def quickstart(numbers: list[int] | None = None) -> dict:
    numbers = numbers or [1, 2, 3, 4, 5]
    started = time.perf_counter()

    # (1) concurrency: five runs of `square` at once, then one that waits for all of them
    squares = square.map(numbers)
    sum_future = total.submit(squares)
    fetched = flaky_fetch.submit("inventory-service")

    # (3) caching: the second call with the same input is a cache hit
    first = slow_lookup("asyncflow", return_state=True)
    second = slow_lookup("asyncflow", return_state=True)
    print(f"slow_lookup: first run {first.name}, second run {second.name} (function executed {lookups_executed}x)")

    # (2) retries: the future's result is there once the retry succeeded
    print(f"flaky_fetch returned {fetched.result()!r}")
    print(f"squares: {[f.result() for f in squares]}, total: {sum_future.result()}")

    summary = {
        "total": sum_future.result(),
        "fetched": fetched.result(),
        "cache": second.name,
        "seconds": round(time.perf_counter() - started, 2),
    }
    print(
        f"Summary: total={summary['total']}, fetched={summary['fetched']!r}, "
        f"second lookup {summary['cache']}, took {summary['seconds']}s"
    )
    return summary


if __name__ == "__main__":
    quickstart()
