from __future__ import annotations

import pytest

from asyncflow.testing import isolated_store


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return request.param


@pytest.fixture(autouse=True)
def store():
    """Each test records into its own in-memory store."""
    with isolated_store() as store:
        yield store
