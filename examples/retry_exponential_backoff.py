"""Seed: tasks docs, "Custom retry behavior" — `exponential_backoff` retry delays.

The seed's backoff_factor=10 (10, 20, 40 s) is shortened to 0.05 (0.05, 0.1, 0.2 s), and its "(rest of
code follows)" is filled in with a body that fails twice and then succeeds.
"""
from asyncflow import flow, task
from asyncflow.tasks import exponential_backoff
from asyncflow.runtime import task_run


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=0.05))
def some_task_with_exponential_backoff_retries():
    if task_run.run_count < 3:
        raise RuntimeError(f"attempt {task_run.run_count} failed")
    return f"succeeded on attempt {task_run.run_count}"


@flow(log_prints=True)
def backoff_flow():
    print(f"delays: {exponential_backoff(backoff_factor=0.05)(3)}")
    print(some_task_with_exponential_backoff_retries())


if __name__ == "__main__":
    backoff_flow()
