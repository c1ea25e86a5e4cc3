"""The SQLite store's writer process (started by process_writer.py; see there): reads batches from
its input, writes each in one transaction with the store's own fold and SQL, answers each.

Messages (process_writer.send): ("start", 0, config) first, answered ("ready", None or the error);
then ("batch", n, records), written with the row ("counters", token) = n in the same transaction, and
("forget", n, None) (runs were deleted: forget the numbers kept of open runs), each answered ("ok",
None), ("error", the error), or ("unpickled", None) for a message it could not unpickle (the parent
writes that batch itself). At the end of its input it deletes its `counters` row and exits.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
from typing import Any

from .sqlite import SQLiteStore
from .writer import _WRITERS
from .writer_pipe import error_info, receive, receive_bytes, send

_SET_LAST = ("INSERT INTO counters (name, value) VALUES (?, ?) "
             "ON CONFLICT (name) DO UPDATE SET value = excluded.value")


class ChildStore(SQLiteStore):
    """The store as the writer process uses it: writes under its parent's owner row, and numbers each
    batch in its transaction."""

    token = ""
    _wired = True  # the batches come through the pipe in writer_pipe's wire form (fold reads it `wired`)
    batch = 0  # the number of the batch being written

    def _write_in_transaction(self, conn: Any, batch: list[tuple[Any, ...]]) -> None:
        super()._write_in_transaction(conn, batch)
        conn.execute(_SET_LAST, (self.token, self.batch))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent flushes through us at its exit
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inp, out = 0, os.dup(1)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the answers
    with contextlib.suppress(OSError):  # the parent is gone: nobody to answer
        _serve(inp, out)


def _serve(inp: int, out: int) -> None:
    message = receive(inp)
    if message is None:
        return
    config = message[2]
    try:
        store = ChildStore(config["path"], recover=False, busy_timeout=config["busy_timeout"],
                           privacy=config["privacy"], writer="thread")
    except Exception as exc:
        send(out, ("ready", error_info(exc)))
        return
    _WRITERS.discard(store)  # nothing to flush at exit, and its owner row is the parent's to close
    store._owner, store.token = config["owner"], config["token"]
    send(out, ("ready", None))
    try:
        while (data := receive_bytes(inp)) is not None:
            try:
                message = pickle.loads(data)
            except Exception:  # a value whose class this process cannot import: the parent writes it
                send(out, ("unpickled", None))
                continue
            send(out, _answer(store, *message))
    finally:
        with contextlib.suppress(Exception):
            store._writer_conn().execute("DELETE FROM counters WHERE name = ?", (store.token,))
        with contextlib.suppress(Exception):
            store._close_connections()


def _answer(store: ChildStore, op: str, number: int, payload: Any) -> tuple[str, Any]:
    try:
        if op == "batch":
            store.batch = number
            store._write_batch(store._writer_conn(), payload)
        elif op == "forget":
            store._open_runs.clear()
        return ("ok", None)
    except Exception as exc:
        store._drop_connection()  # as the thread does after an error: the next batch connects again
        return ("error", error_info(exc))
