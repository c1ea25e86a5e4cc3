"""Live updates: one poller per server follows the store's change feed (`read_changes`) and log feed
(`read_logs_since`) and hands each open page (a server-sent-events stream) what concerns it.

The poller reads only what is new since its last read (a range on the feeds' sequence numbers), so
the cost of live pages does not grow with the store or with the number of pages open; a page never
re-reads what it shows. It polls while someone listens and rests otherwise.

A stream is scoped: the runs page wants flow runs only; a flow run's page the states and log lines of
that flow run, its task runs and its subflows (found as they appear); a task run's page its own. A
page too slow to keep up (its buffer of batches full) gets a `reset` event and reloads instead of
holding the poller back.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from .._store.reads import levels_from
from ._json import iso

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
BUFFER = 64  # batches a stream may fall behind before it is reset
CATCH_UP = 20_000  # changes a reconnecting stream may catch up on before it is told to reload
FEED_READ = 1000


def tail(read: Callable[[int], bool]) -> int:
    """The last sequence number of a feed, from `read(since) -> whether anything follows since`:
    a doubling probe and a binary search, so ~2 log2(n) one-row reads instead of reading the feed."""
    if not read(0):
        return 0
    low, high = 0, 1
    while read(high):
        low, high = high, high * 2
    while high - low > 1:  # read(low) is True, read(high) is False: the tail is in [low + 1, high]
        middle = (low + high) // 2
        if read(middle):
            low = middle
        else:
            high = middle
    return high


def change_tail(store: Any) -> int:
    return tail(lambda since: bool(store.read_changes(since, 1)[0]))


def log_tail(store: Any) -> int:
    return tail(lambda since: bool(store.read_logs_since(since, limit=1)[0]))


@attrs.define(eq=False)
class Scope:
    """What a stream wants: `kind` is "runs" (flow runs), "flow_run", "task_run" or "all"."""

    kind: str
    run_id: uuid.UUID | None = None
    logs: bool = False
    levels: tuple[str, ...] | None = None
    tree: set[str] = attrs.Factory(set)  # flow_run: the ids of the flow run and its subflows (as strings)

    def __attrs_post_init__(self) -> None:
        if self.kind == "flow_run" and self.run_id is not None:
            self.tree.add(str(self.run_id))

    def changes(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.kind == "all":
            return batch
        if self.kind == "runs":
            return [c for c in batch if c["kind"] == "flow_run"]
        if self.kind == "task_run":
            key = str(self.run_id)
            return [c for c in batch if c["run_id"] == key]
        out = []
        for change in batch:
            if change["kind"] == "flow_run" and change.get("parent_flow_run_id") in self.tree:
                self.tree.add(change["run_id"])  # a new subflow: follow it too
            if change["flow_run_id"] in self.tree:
                out.append(change)
        return out

    def lines(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.logs:
            return []
        if self.levels is not None:
            batch = [line for line in batch if line["level"] in self.levels]
        if self.kind == "flow_run":
            return [line for line in batch if line["flow_run_id"] in self.tree]
        if self.kind == "task_run":
            key = str(self.run_id)
            return [line for line in batch if line["task_run_id"] == key]
        return batch if self.kind == "all" else []


def change_json(change: Any) -> dict[str, Any]:
    return {"seq": change.seq, "run_id": str(change.run_id), "kind": change.kind,
            "flow_run_id": None if change.flow_run_id is None else str(change.flow_run_id),
            "run_name": change.run_name, "state": {"type": change.state_type.value, "name": change.state_name,
                                                   "message": change.state_message, "timestamp": iso(change.ts)},
            "ts": change.ts}


def line_json(line: Any) -> dict[str, Any]:
    return {"seq": line.seq, "flow_run_id": line.flow_run_id, "task_run_id": line.task_run_id, "level": line.level,
            "message": line.message, "timestamp": iso(line.ts), "ts": line.ts}


@attrs.define(eq=False)
class _Stream:
    scope: Scope
    send: MemoryObjectSendStream[dict[str, Any]]
    lagged: bool = False


class Hub:
    """The poller. `store_of()` returns the store, or None while there is none yet."""

    def __init__(self, store_of: Callable[[], Any], interval: float = POLL_SECONDS) -> None:
        self.store_of = store_of
        self.interval = interval
        self.streams: set[_Stream] = set()
        self.seq: int | None = None  # the change feed read up to here
        self.log_seq: int | None = None
        self._parents: OrderedDict[str, str | None] = OrderedDict()  # flow run id -> parent id (bounded)
        self._pending_changes: list[dict[str, Any]] = []
        self._pending_lines: list[dict[str, Any]] = []
        self._wake = anyio.Event()  # (made again in the event loop by the app's lifespan)
        self._init_lock = threading.Lock()
        self.stopped = False

    def _ensure(self, store: Any, logs: bool) -> tuple[int, int | None]:
        """Start following the feeds from their tails (blocking): once, under a lock, so that the poller
        and a joining stream agree on where following began."""
        with self._init_lock:
            if self.seq is None:
                self.seq = change_tail(store)
            if logs and self.log_seq is None:
                self.log_seq = log_tail(store)
            return self.seq, self.log_seq

    # -- positions ------------------------------------------------------------------------------------
    def positions(self, logs: bool = True) -> tuple[int, int]:
        """Where the feeds are now (the hub's positions if it is following them, else the stores' tails):
        a page rendered after this call gets every change after these numbers on its stream. Blocking."""
        store = self.store_of()
        if store is None:
            return 0, 0
        seq = self.seq if self.seq is not None else change_tail(store)
        if not logs:
            return seq, 0
        log_seq = self.log_seq if self.log_seq is not None else log_tail(store)
        return seq, log_seq

    # -- the poller -----------------------------------------------------------------------------------
    async def run(self) -> None:
        while not self.stopped:
            if not self.streams:
                self.seq = self.log_seq = None  # resting: positions are re-read when someone comes
                self._wake = anyio.Event()
                with anyio.move_on_after(KEEPALIVE_SECONDS):
                    await self._wake.wait()
                continue
            wants_logs = any(stream.scope.logs for stream in self.streams)
            with contextlib.suppress(Exception):  # a store that went away, or is busy: try again on the next tick
                await anyio.to_thread.run_sync(self._poll_once_blocking_reads, wants_logs)
            await self._deliver()
            await anyio.sleep(self.interval)

    def _poll_once_blocking_reads(self, wants_logs: bool) -> None:
        """What was stored since the last read. The log feed is read while a stream wants log lines; its
        position waits meanwhile (never reset while streams are open: a joining stream relies on it)."""
        store = self.store_of()
        if store is None:
            return
        seq, log_seq = self._ensure(store, wants_logs)
        changes: list[dict[str, Any]] = []
        for _ in range(20):  # at most 20,000 a tick; the rest on the next
            found, seq = store.read_changes(seq, FEED_READ)
            changes += [change_json(c) for c in found]
            if len(found) < FEED_READ:
                break
        for change in changes:
            if change["kind"] == "flow_run":
                change["parent_flow_run_id"] = self._parent(store, change["run_id"])
        lines: list[dict[str, Any]] = []
        if wants_logs and log_seq is not None:
            for _ in range(20):
                found_lines, log_seq = store.read_logs_since(log_seq, limit=FEED_READ)
                lines += [line_json(line) for line in found_lines]
                if len(found_lines) < FEED_READ:
                    break
        self.seq, self.log_seq = seq, log_seq
        self._pending_changes, self._pending_lines = changes, lines

    def _parent(self, store: Any, run_id: str) -> str | None:
        if run_id in self._parents:
            return self._parents[run_id]
        try:
            parent = store.read_flow_run(uuid.UUID(run_id)).parent_flow_run_id
        except Exception:  # deleted meanwhile
            parent = None
        self._parents[run_id] = None if parent is None else str(parent)
        while len(self._parents) > 10_000:
            self._parents.popitem(last=False)
        return self._parents[run_id]

    async def _deliver(self) -> None:
        changes, lines = self._pending_changes, self._pending_lines
        self._pending_changes, self._pending_lines = [], []
        if not changes and not lines:
            return
        for stream in list(self.streams):
            self._offer(stream, changes, lines)

    def _offer(self, stream: _Stream, changes: list[dict[str, Any]], lines: list[dict[str, Any]]) -> None:
        mine, my_lines = stream.scope.changes(changes), stream.scope.lines(lines)
        if not mine and not my_lines:
            return
        try:
            stream.send.send_nowait({"changes": mine, "logs": my_lines, "seq": self.seq, "log_seq": self.log_seq})
        except anyio.WouldBlock:
            stream.lagged = True
            stream.send.close()
            self.streams.discard(stream)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.streams.discard(stream)

    # -- one stream -----------------------------------------------------------------------------------
    async def events(self, scope: Scope, since: int | None, log_since: int | None) -> AsyncIterator[str]:
        """The text of a server-sent-events stream: `changes` events (JSON: changes, logs, seq, log_seq;
        the event id is "seq:log_seq", sent back by the browser on reconnect), comments to keep the
        connection alive, and `reset` when the page should reload (it fell too far behind).

        The stream joins the poller first, then reads what was stored from `since` up to where the
        poller is (its backlog): between the two nothing is missed, and what both deliver is sent once
        (each change and line goes out in order of its sequence number, once)."""
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](BUFFER)
        stream = _Stream(scope, send)
        yield "retry: 1000\n\n"
        if self.stopped:
            return
        self.streams.add(stream)
        self._wake.set()
        try:
            backlog = await anyio.to_thread.run_sync(self._backlog, scope, since, log_since)
            if backlog is None:
                yield _event("reset", {"reason": "too far behind"})
                return
            sent, sent_log = backlog["seq"], backlog["log_seq"]
            if backlog["changes"] or backlog["logs"]:
                yield _event("changes", backlog, _event_id(backlog))
            while True:
                batch, ended = None, False
                with anyio.move_on_after(KEEPALIVE_SECONDS):
                    try:
                        batch = await receive.receive()
                    except anyio.EndOfStream:
                        ended = True
                if ended:  # the server stops, or this page fell behind
                    if stream.lagged:
                        yield _event("reset", {"reason": "too slow"})
                    return
                if batch is None:
                    yield ": keep-alive\n\n"
                    continue
                changes = [c for c in batch["changes"] if c["seq"] > sent]
                lines = [line for line in batch["logs"] if sent_log is None or line["seq"] > sent_log]
                sent = max([sent, *(c["seq"] for c in changes)])
                if lines:
                    sent_log = max([sent_log or 0, *(line["seq"] for line in lines)])
                if changes or lines:
                    out = {"changes": changes, "logs": lines, "seq": sent, "log_seq": sent_log}
                    yield _event("changes", out, _event_id(out))
        finally:
            self.streams.discard(stream)
            send.close()
            receive.close()

    def _backlog(self, scope: Scope, since: int | None, log_since: int | None) -> dict[str, Any] | None:
        """What was stored after `since` (and `log_since`) up to where the poller follows from; without
        them, nothing (the stream starts now). None if that is too much to catch up on."""
        store = self.store_of()
        if store is None:
            return {"changes": [], "logs": [], "seq": since or 0, "log_seq": log_since or 0}
        target, log_target = self._ensure(store, scope.logs)
        out: dict[str, Any] = {"changes": [], "logs": [], "seq": target, "log_seq": log_target}
        if since is not None and since < target:
            if target - since > CATCH_UP:
                return None
            position, changes = since, []
            while position < target:
                found, position = store.read_changes(position, FEED_READ)
                if not found:
                    break
                changes += [change_json(c) for c in found if c.seq <= target]
            for change in changes:
                if change["kind"] == "flow_run":
                    change["parent_flow_run_id"] = self._parent(store, change["run_id"])
            out["changes"] = scope.changes(changes)
        if scope.logs and log_since is not None and log_target is not None and log_since < log_target:
            if log_target - log_since > CATCH_UP:
                return None
            position, lines = log_since, []
            while position < log_target:
                found_lines, position = store.read_logs_since(position, limit=FEED_READ)
                if not found_lines:
                    break
                lines += [line_json(line) for line in found_lines if line.seq <= log_target]
            out["logs"] = scope.lines(lines)
        return out

    def stop(self) -> None:
        """End every stream (the server is stopping: open pages must not hold it up). Sync: called from
        the server's signal handler on the event loop's thread."""
        self.stopped = True
        for stream in list(self.streams):
            stream.send.close()
        self.streams.clear()
        self._wake.set()


def _event_id(batch: dict[str, Any]) -> str:
    """"seq:log_seq" (or "seq" for a stream without log lines): what the browser sends back as
    Last-Event-ID when it reconnects."""
    return f"{batch['seq']}" if batch.get("log_seq") is None else f"{batch['seq']}:{batch['log_seq']}"


def _event(name: str, data: Any, event_id: str | None = None) -> str:
    text = json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {name}\ndata: {text}\n\n"


def parse_event_id(text: str | None) -> tuple[int | None, int | None]:
    """The browser's Last-Event-ID ("seq:log_seq"); anything else is ignored (None)."""
    if not text:
        return None, None
    seq, _, log_seq = text.partition(":")
    return (int(seq) if seq.isdigit() else None), (int(log_seq) if log_seq.isdigit() else None)


def level_names(level: str | None) -> tuple[str, ...] | None:
    if level is None:
        return None
    return levels_from(int(level) if level.isdigit() else level)


__all__ = ["Hub", "Scope", "change_tail", "level_names", "log_tail", "parse_event_id", "tail"]
