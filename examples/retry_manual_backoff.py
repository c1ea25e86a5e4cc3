"""Seed: tasks docs, "Custom retry behavior" — `retry_delay_seconds` as a list of increasing delays.

The seed's delays [1, 10, 100] are shortened to [0.1, 0.2, 0.4], and its "(rest of code follows)" is
filled in with a body that fails on its first three attempts and succeeds on the fourth (the last retry).
"""
import itertools
import time

from asyncflow import flow, task
from asyncflow.runtime import task_run

attempt_times = []


@task(retries=3, retry_delay_seconds=[0.1, 0.2, 0.4])
def some_task_with_manual_backoff_retries():
    attempt_times.append(time.monotonic())
    if task_run.run_count < 4:
        raise RuntimeError(f"attempt {task_run.run_count} failed")
    return f"succeeded on attempt {task_run.run_count}"


@flow(log_prints=True)
def backoff_flow():
    print(some_task_with_manual_backoff_retries())
    delays = [round(b - a, 1) for a, b in itertools.pairwise(attempt_times)]
    print(f"delays between attempts: {delays}")


if __name__ == "__main__":
    backoff_flow()
