"""Seed: tasks docs, "Timeouts" — `show_timeouts` has a `timeout_seconds` shorter than its work.

Kept exactly as in the seed: the task is only defined, not called. asyncflow does not yet enforce
`timeout_seconds` on *sync* tasks (the task would run its full sleep and finish Completed), so the
example does not call it; see examples/README.md. Async tasks' timeouts already work.
"""
from asyncflow import task
import time


@task(timeout_seconds=1, log_prints=True)
def show_timeouts():
    print("I will execute")
    time.sleep(5)
    print("I will not execute")
