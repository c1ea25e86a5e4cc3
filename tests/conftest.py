from __future__ import annotations

import signal

import pytest

from asyncflow._store.sqlite import SQLiteStore
from asyncflow.testing import isolated_store

# The suite signals the processes it starts (Ctrl-C, hang-up) and checks how they end, so they must start
# with the default dispositions whatever launched the suite: a shell's background job ignores SIGINT and
# `nohup` ignores SIGHUP, and an ignored signal stays ignored in every child (asyncflow then leaves it so).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest):
    """Every async test runs on asyncio and on trio. Tests that parametrize it indirectly with
    "virtual_asyncio" / "virtual_trio" run on virtual time: asyncflow's VirtualTimeLoop for asyncio,
    trio's MockClock(autojump_threshold=0) for trio: sleeps and deadlines take no real time."""
    if request.param == "virtual_asyncio":
        from asyncflow.testing import VirtualTimeLoop

        return ("asyncio", {"loop_factory": VirtualTimeLoop})
    if request.param == "virtual_trio":
        import trio.testing

        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    return request.param


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    """Each test records into its own in-memory store, with its own ASYNCFLOW_HOME (persisted results,
    cache records) in a temporary directory."""
    from asyncflow._results import clear_memory

    monkeypatch.setenv("ASYNCFLOW_HOME", str(tmp_path / "asyncflow-home"))
    monkeypatch.delenv("ASYNCFLOW_LOCAL_STORAGE_PATH", raising=False)
    clear_memory()
    with isolated_store() as store:
        yield store



@pytest.fixture
def db(tmp_path):
    """A real SQLite store file, the store of the test."""
    store = SQLiteStore(tmp_path / "asyncflow.db")
    with isolated_store(store):
        yield store
    store.close()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (Debian's package) in a temporary directory, for the whole session; skipped
    where it is not installed, a failure under ASYNCFLOW_REQUIRE_POSTGRES (CI)."""
    from pg_server import PostgresServer

    server = PostgresServer()
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty database on the session's server (dropped afterwards)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
