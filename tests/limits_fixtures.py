"""Fixtures shared by the concurrency-limit tests: the stores that keep limits for every process (a SQLite
file, and a PostgreSQL database on a real server, tests/pg_server.py) and a fake clock for leases and decay.
A test module imports the ones it uses (`from limits_fixtures import fake_clock, limits_store, sqlite_store`)."""

from __future__ import annotations

import pytest

from asyncflow._clock import set_clock
from asyncflow._limits import db as limits_db
from asyncflow._store.sqlite import SQLiteStore
from asyncflow.testing import FakeClock, isolated_store


@pytest.fixture
def sqlite_store(tmp_path):
    store = SQLiteStore(tmp_path / "asyncflow.db")
    with isolated_store(store):
        yield store
    store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def limits_store(request, tmp_path):
    """The key behaviours on both stores that keep limits for every process: a SQLite file, and a
    PostgreSQL database on a real server (tests/pg_server.py)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_store")
        return
    from asyncflow._store.postgres import PostgresStore

    url = request.getfixturevalue("postgres_url")
    store = PostgresStore(url)
    with isolated_store(store):
        yield store
    store.close()
    db = limits_db._databases.pop(url, None)
    if db is not None:
        db.close()


@pytest.fixture
def fake_clock():
    clock = FakeClock()
    previous = set_clock(clock)
    yield clock
    set_clock(previous)
