"""Seed: tasks docs, "Custom retry behavior" — `retry_condition_fn` retries on HTTP errors other than 401/404.

Offline variant: "https://httpbin.org/status/503" is replaced by the local API's /status/503 (see
_local_api.py). A 503 is retried once and then fails for good, so the flow fails; this variant runs the
flow with `return_state=True` to show that final state instead of raising, and also runs it against
/status/404, which is not retried.
"""
import httpx
from asyncflow import flow, task

import _local_api

attempts = []


def retry_handler(task, task_run, state) -> bool:
    """Custom retry handler that specifies when to retry a task"""
    try:
        # Attempt to get the result of the task
        state.result()
    except httpx.HTTPStatusError as exc:
        # Retry on any HTTP status code that is not 401 or 404
        do_not_retry_on_these_codes = [401, 404]
        return exc.response.status_code not in do_not_retry_on_these_codes
    except httpx.ConnectError:
        # Do not retry
        return False
    except:
        # For any other exception, retry
        return True


@task(retries=1, retry_condition_fn=retry_handler)
def my_api_call_task(url):
    attempts.append(url)
    response = httpx.get(url)
    response.raise_for_status()
    return response.json()


@flow
def get_data_flow(url):
    my_api_call_task(url=url)


if __name__ == "__main__":
    for code in (503, 404):
        attempts.clear()
        state = get_data_flow(url=f"{_local_api.base_url()}/status/{code}", return_state=True)
        print(f"status {code}: {len(attempts)} attempt(s), flow finished in state {state.name}")
