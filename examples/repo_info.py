"""Seed: tasks docs, "Example task" (repo_info.py) — a flow with a single task.

Offline variant: the task calls a local fake of the GitHub API (see _local_api.py) instead of api.github.com.
"""
import httpx
from asyncflow import flow, task
from typing import Optional

import _local_api

API = _local_api.base_url()  # stands in for "https://api.github.com"


@task
def get_url(url: str, params: Optional[dict[str, any]] = None):
    response = httpx.get(url, params=params)
    response.raise_for_status()
    return response.json()


@flow(retries=3, retry_delay_seconds=5, log_prints=True)
def get_repo_info(repo_name: str = "PrefectHQ/prefect"):
    url = f"{API}/repos/{repo_name}"
    repo_stats = get_url(url)
    print(f"{repo_name} repository statistics 🤓:")
    print(f"Stars 🌠 : {repo_stats['stargazers_count']}")
    print(f"Forks 🍴 : {repo_stats['forks_count']}")


if __name__ == "__main__":
    get_repo_info()
