"""Seed: tasks docs, "Retries" — `get_data_task` retries a brittle HTTP API.

Offline variant: "https://api.brittle-service.com/endpoint" is replaced by a local endpoint that answers
503 twice and then 200 (see _local_api.py), so the task fails twice and succeeds on its second retry.
The retry delay is shortened from 5 s to 0.1 s.
"""
import httpx
from asyncflow import flow, task

import _local_api

BRITTLE_URL = f"{_local_api.base_url()}/flaky/endpoint?failures=2"  # "https://api.brittle-service.com/endpoint"


@task(retries=2, retry_delay_seconds=0.1)
def get_data_task(
    url: str = BRITTLE_URL
) -> dict:
    response = httpx.get(url)
    
    # If the response status code is anything but a 2xx, httpx will raise
    # an exception. This task doesn't handle the exception, so asyncflow will
    # catch the exception and will consider the task run failed.
    response.raise_for_status()
    
    return response.json()
    

@flow(log_prints=True)
def get_data_flow():
    data = get_data_task()
    print(f"got {data['data']!r} on attempt {data['attempt']}")


if __name__ == "__main__":
    get_data_flow()
