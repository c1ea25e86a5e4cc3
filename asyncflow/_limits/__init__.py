"""Concurrency limits without a server (SPEC §12): named limits and the slots their holders lease,
in tables of the store's database, so every process on the store shares them.

    schema.py   the tables (a migration of the SQLite store, and of the PostgreSQL store)
    sql.py      what one short transaction does: create, read, claim, release, renew, free
    db.py       where the tables are (the process's store) and how a thread reaches them (fork gate)
    pg.py       the same tables in a PostgreSQL store: a claim locks its limits' rows
    leases.py   held leases: renewed by one background thread while user code runs
    acquire.py  waiting for slots (backoff, timeout, cancellation) and the context managers' core
    tags.py     the engine's hook: a task run with a limited tag waits for a slot first
"""
