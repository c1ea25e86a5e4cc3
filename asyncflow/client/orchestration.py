"""Prefect's import path for the client: `from asyncflow.client.orchestration import get_client`."""

from . import AsyncflowClient as AsyncflowClient
from . import SyncAsyncflowClient as SyncAsyncflowClient
from . import get_client as get_client

__all__ = ["AsyncflowClient", "SyncAsyncflowClient", "get_client"]
