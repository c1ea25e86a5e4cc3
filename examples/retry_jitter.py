"""Seed: tasks docs, "Add jitter to avoid thundering herds" — exponential backoff with `retry_jitter_factor`.

The seed's backoff_factor=10 is shortened to 0.05, and its "(rest of code follows)" is filled in with a
body that fails twice and then succeeds.
"""
from asyncflow import flow, task
from asyncflow.tasks import exponential_backoff
from asyncflow.runtime import task_run


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=0.05),
    retry_jitter_factor=1,
)


def some_task_with_exponential_backoff_retries():
    if task_run.run_count < 3:
        raise RuntimeError(f"attempt {task_run.run_count} failed")
    return f"succeeded on attempt {task_run.run_count}"


@flow(log_prints=True)
def jitter_flow():
    print(some_task_with_exponential_backoff_retries())


if __name__ == "__main__":
    jitter_flow()
