"""What the PostgreSQL store, broker and result storage share: URLs (checked without connecting, shown
without their password), connections (and what a forked child must not do with its parent's), the SQL the
SQLite and PostgreSQL stores share (SQLite's placeholders translated), the read API's dialect, and what
an error means. psycopg is imported only where a connection is made or an error judged."""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import sqlite_reads
from .base import StoreError
from .writer import BAD_RECORD, BUSY, UNUSABLE

SCHEMES = ("postgresql://", "postgres://")


# -- URLs --------------------------------------------------------------------------------------------
def is_url(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(SCHEMES)


def check_url(raw: str) -> str:
    """A PostgreSQL URL as the settings take it (`postgresql://user:password@host:port/database?options`);
    ValueError saying what is wrong. Checked without connecting (and without importing psycopg)."""
    url = raw.strip()
    if not is_url(url):
        raise ValueError("expected postgresql://user:password@host:5432/database")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number in range
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ValueError(f"expected postgresql://user:password@host:5432/database ({exc})") from None
    hosts = parts.hostname or dict(query).get("host")
    if not hosts:
        raise ValueError("expected postgresql://user:password@host:5432/database (the URL names no host)")
    if parts.fragment:
        raise ValueError("expected postgresql://user:password@host:5432/database (a URL has no #fragment here)")
    if port == 0:
        raise ValueError("expected postgresql://user:password@host:5432/database (port 0)")
    return url


def redact(url: str) -> str:
    """The URL without its password (in the user part or a `password=` parameter), for messages."""
    from .._workers.redis_broker import redact as _redact

    text = _redact(url)
    return text.replace("<a Redis URL", "<a PostgreSQL URL")


def connect(url: str, *, autocommit: bool = True, connect_timeout: float = 5.0) -> Any:
    """A new psycopg connection (ImportError with the fix if psycopg is not installed)."""
    try:
        import psycopg
    except ImportError:
        raise ImportError("The PostgreSQL store and broker need psycopg 3: "
                          "pip install 'asyncflow-anyio[postgres]'.") from None
    options: dict[str, Any] = {"autocommit": autocommit, "application_name": "asyncflow"}
    if "connect_timeout" not in url:
        options["connect_timeout"] = max(1, round(connect_timeout))
    return psycopg.connect(url, **options)


def forget_in_child(conn: Any) -> None:
    """A connection inherited through fork belongs to the parent: the child must never talk on its socket,
    not even to close it (closing sends the server a Terminate message, which ends the parent's session).
    Its socket descriptor is pointed at /dev/null in this process, so that closing it later is harmless."""
    try:
        fd = conn.pgconn.socket
    except Exception:
        return
    try:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except OSError:
        pass


# -- the SQL the stores share: `?` and `:name` placeholders -----------------------------------------------
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_translated: dict[tuple[str, bool], str] = {}


def translate(sql: str, named: bool) -> str:
    """SQLite-style placeholders (`?`, `:name`) as psycopg's (`%s`, `%(name)s`)."""
    key = (sql, named)
    out = _translated.get(key)
    if out is None:
        out = sql.replace("%", "%%")
        out = _NAMED.sub(r"%(\1)s", out) if named else out.replace("?", "%s")
        if len(_translated) > 2000:
            _translated.clear()
        _translated[key] = out
    return out


class Shared:
    """A psycopg connection that runs the SQL the stores share (`conn.execute(sql, params)` returning a
    cursor with fetchall/fetchone/rowcount), as retention.py and cli_queries.py expect of sqlite3."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        named = isinstance(params, dict)
        return self.conn.execute(translate(sql, named), params if named else tuple(params))

    def executemany(self, sql: str, rows: Any) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(translate(sql, False), [tuple(row) for row in rows])


class Dialect(sqlite_reads.Dialect):
    """The read API's terms in PostgreSQL (tags are JSON text, ASCII case as SQLite's lower())."""

    def has_tag(self, table: str) -> str:
        return f"CAST({table}.tags AS JSONB) @> jsonb_build_array(CAST(? AS TEXT))"

    def contains(self, column: str) -> str:
        return f"strpos(translate({column}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'), ?) > 0"

    refs = "SELECT CAST(value AS BIGINT) FROM json_array_elements_text(CAST(? AS JSON))"
    bucket = "CAST(trunc(created / CAST(? AS DOUBLE PRECISION)) AS BIGINT)"
    mixed_union = False


POSTGRES = Dialect()


# -- what an error means ---------------------------------------------------------------------------------
_UNUSABLE_CLASSES = ("53", "58", "XX", "28", "3D", "3F", "F0")  # resources, system, internal, auth, no db/schema
_UNUSABLE_STATES = frozenset({"25006", "42501", "42P01", "42703", "42883"})  # read only, privilege, schema gone
_BUSY_STATES = frozenset({"40001", "40P01", "55P03", "57014"})  # serialization, deadlock, lock/statement timeout


def is_connection_error(exc: BaseException) -> bool:
    """The server cannot be reached or went away (a restart, a network fault, an administrator)."""
    try:
        import psycopg
    except ImportError:
        return False
    if isinstance(exc, psycopg.InterfaceError):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state[:2] in ("08", "57") or state == "53300"


def classify(exc: BaseException) -> str:
    """BUSY (retry later), UNUSABLE (degrade) or BAD_RECORD (isolate the record) for a connection that
    is known to work (a connection error is the store's to judge: see `PostgresStore._classify`)."""
    if isinstance(exc, (OSError, StoreError, ImportError)):
        return UNUSABLE
    state = getattr(exc, "sqlstate", None) or ""
    if state in _BUSY_STATES:
        return BUSY
    if state[:2] in _UNUSABLE_CLASSES or state in _UNUSABLE_STATES:
        return UNUSABLE
    return BAD_RECORD


def advice(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, ImportError):
        return "Install psycopg: pip install 'asyncflow-anyio[postgres]'."
    if state.startswith("53"):
        return ("The database server is out of disk space or memory (or connections): free some, "
                "or ask its administrator.")
    if state.startswith("28"):
        return "The database refused the user or password: check them in ASYNCFLOW_STORE."
    if state.startswith("3D"):
        return "The database does not exist: create it (createdb), or fix its name in ASYNCFLOW_STORE."
    if state in ("42501", "25006"):
        return "This user may not write there (or the server is a read-only replica): grant it, or use the primary."
    if is_connection_error(exc):
        return ("The database server cannot be reached: start it or make it reachable from this machine "
                "(`pg_isready -d URL`), or fix ASYNCFLOW_STORE.")
    return "Check the database, or set ASYNCFLOW_STORE=sqlite to record on this machine."


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {str(exc).strip()}"
    state = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {state})" if state else text


def _clean(text: Any) -> Any:
    """PostgreSQL text cannot hold NUL characters: they become U+FFFD (the rest of the text is kept)."""
    return text.replace("\x00", "\ufffd") if type(text) is str and "\x00" in text else text


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _tags(tags: Any) -> str:
    return json.dumps(list(tags)) if tags else "[]"
