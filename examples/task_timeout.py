"""Seed: tasks docs, "Timeouts" — `timeout_seconds=1` on a task that sleeps 5 seconds.

The task ends `TimedOut` after one second, and "I will not execute" is never printed: the sync
function is stopped before it runs another line (the sleep is shortened here: 1.5 s).
"""
import time

from asyncflow import flow, task


@task(timeout_seconds=1, log_prints=True)
def show_timeouts():
    print("I will execute")
    time.sleep(1.5)
    print("I will not execute")


@flow
def timeouts_flow():
    return show_timeouts(return_state=True)


if __name__ == "__main__":
    state = timeouts_flow(return_state=True)
    print(f"the task ended {state.data!r}")
    time.sleep(1)  # well past the end of the sleep: still nothing more from the task
