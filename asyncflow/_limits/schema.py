"""The concurrency-limit tables (schema version 6 of the SQLite store, 2 of the PostgreSQL store).

`concurrency_limits`: one row per limit; a tag-based task limit is the limit named `tag:<tag>`, as in
Prefect. `decayed_slots` at `decayed_at` are the slots `rate_limit` took; they drain at
`slot_decay_per_second`. `concurrency_slots`: one row per (lease, limit) held; a lease expires at
`expires` unless its holder renews it, and names its holder's process (owners.py) so a dead holder's
slots on this host are freed at once."""

from __future__ import annotations

LIMITS_SCHEMA: list[str] = [
    """CREATE TABLE concurrency_limits (
        name TEXT PRIMARY KEY,
        slot_limit INTEGER NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        slot_decay_per_second REAL NOT NULL DEFAULT 0,
        decayed_slots REAL NOT NULL DEFAULT 0,
        decayed_at REAL NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        updated REAL NOT NULL)""",
    """CREATE TABLE concurrency_slots (
        lease TEXT NOT NULL,
        name TEXT NOT NULL,
        slots INTEGER NOT NULL,
        expires REAL NOT NULL,
        holder TEXT,
        host TEXT NOT NULL,
        boot TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (lease, name))""",
    "CREATE INDEX concurrency_slots_by_name ON concurrency_slots (name)",
]

PG_LIMITS_SCHEMA: list[str] = [statement.replace(" REAL ", " DOUBLE PRECISION ") for statement in LIMITS_SCHEMA]
"""The same tables in PostgreSQL (its REAL is single precision: times need double)."""
