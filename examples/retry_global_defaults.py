"""Seed: tasks docs, "Configure retry behavior globally" — default retries and retry delays from settings.

Prefect's `prefect config set PREFECT_TASK_DEFAULT_RETRIES=2` and
`PREFECT_TASK_DEFAULT_RETRY_DELAY_SECONDS=[1, 10, 100]` become asyncflow's environment variables
ASYNCFLOW_TASK_DEFAULT_RETRIES and ASYNCFLOW_TASK_DEFAULT_RETRY_DELAY_SECONDS (delays shortened to
[0.1, 0.1, 0.1]). They apply to tasks that do not set `retries`/`retry_delay_seconds` themselves.
"""
import os

os.environ["ASYNCFLOW_TASK_DEFAULT_RETRIES"] = "2"
os.environ["ASYNCFLOW_TASK_DEFAULT_RETRY_DELAY_SECONDS"] = "[0.1, 0.1, 0.1]"

from asyncflow import flow, task
from asyncflow.runtime import task_run


@task
def flaky():
    if task_run.run_count < 3:
        raise RuntimeError(f"attempt {task_run.run_count} failed")
    return f"succeeded on attempt {task_run.run_count}"


never_retried_runs = []


@task(retries=0)
def never_retried():
    never_retried_runs.append(task_run.run_count)
    raise RuntimeError("no retries for me")


@flow(log_prints=True)
def defaults_flow():
    print(flaky())
    state = never_retried(return_state=True)
    print(f"never_retried ran {len(never_retried_runs)} time(s) and finished in state {state.name}")
    return "done"


if __name__ == "__main__":
    defaults_flow()
