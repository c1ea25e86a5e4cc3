"""Seed: flow and task configuration tutorial, "Flow and task retries" — a task that always fails runs
three times (two retries), and the flow fails.

The retry delay is shortened from 60 s to 0.1 s. The seed's `state = test_retries()` (older Prefect
returned the state) becomes `test_retries(return_state=True)`: calling a failing flow raises.
"""
from asyncflow import flow, task

# this tasks runs 3 times before the flow fails
@task(retries=2, retry_delay_seconds=0.1)
def failure():
    print('running')
    raise ValueError("bad code")

@flow
def test_retries():
    return failure()

if __name__ == "__main__":
    state = test_retries(return_state=True)
    print(f"flow finished in state {state!r}")
