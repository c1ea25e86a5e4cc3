"""The Redis broker, for workers on many machines: one Redis stream per task, one consumer group.

- enqueue: XADD to the task's stream, and a hash per run for its outcome;
- claim: XAUTOCLAIM first (runs whose lease expired: their worker died), then XREADGROUP for new ones;
- the lease is the pending entry's idle time: renewing is XCLAIM by the same worker (idle time reset);
- complete: HSETNX on the run's `finished` field: only the first completion is recorded (and the hash
  expires after ASYNCFLOW_BROKER_RETENTION_SECONDS); then XACK and XDEL.

Faults: a connection error is retried a few times by redis-py (reconnecting, with jittered backoff, well
under a second), then raised as BrokerUnavailableError naming the URL (without its password); workers
and futures retry that with their own capped backoff. A Redis that restarted without its data has lost
the consumer groups: `claim` creates them again.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import _fork, _settings
from .._exceptions import BrokerUnavailableError
from .broker import QueuedRun, RunOutcome, check_age

_GROUP = "asyncflow-workers"
# Returns 1 if this call recorded the outcome, or an earlier call of the same worker did (a call retried
# after a broken connection), else 0 (another worker finished the run first).
_COMPLETE = """
if redis.call('HSETNX', KEYS[1], 'finished', ARGV[1]) == 0 then
  if redis.call('HGET', KEYS[1], 'worker') == ARGV[4] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'state_type', ARGV[2], 'state_name', ARGV[3], 'worker', ARGV[4])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'message', ARGV[5]) end
if ARGV[8] == '1' then redis.call('HSET', KEYS[1], 'result', ARGV[7]) end
if tonumber(ARGV[9]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[9]) end
return 1
"""
_SET_STATE = """
if redis.call('HEXISTS', KEYS[1], 'finished') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state_type', ARGV[1], 'state_name', ARGV[2])
return 1
"""
_PREFIX = "asyncflow"
_BROKERS: weakref.WeakSet[RedisBroker] = weakref.WeakSet()


def _reset_after_fork() -> None:
    """The runs the parent claimed are the parent's to renew and complete, and the lock guarding them
    may have been held by a parent thread. (redis-py's connection pool notices the new pid itself and
    opens new connections in the child.)"""
    for broker in list(_BROKERS):
        broker._lock = threading.Lock()
        broker._claimed = {}


_fork.register("redis broker", reset_in_child=_reset_after_fork)


def redact(url: str) -> str:
    """The URL without its password (in the user part or a `password=` query parameter)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = parts.query
        if "password" in query:
            query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(query)])
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<a Redis URL that cannot be parsed>"


class RedisBroker:
    expires_finished = True  # finished run hashes expire (ASYNCFLOW_BROKER_RETENTION_SECONDS)

    def __init__(self, url: str) -> None:
        try:
            import redis
            from redis.backoff import ExponentialWithJitterBackoff
            from redis.retry import Retry
        except ImportError:
            raise ImportError(
                "The Redis broker needs the redis package: pip install 'asyncflow-anyio[redis]'.") from None
        self.url = url
        self.safe_url = redact(url)
        # A few quick retries (they reconnect a pooled connection that a Redis restart broke); longer
        # outages are the callers' to wait out, with their own backoff.
        self._redis: Any = redis.Redis.from_url(url, retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 3),
                                           socket_connect_timeout=5, socket_timeout=30)
        self._errors = redis.exceptions
        self._groups: set[str] = set()
        self._complete_script = self._redis.register_script(_COMPLETE)
        self._set_state_script = self._redis.register_script(_SET_STATE)
        self._claimed: dict[str, tuple[str, bytes]] = {}  # run id -> (stream, message id), for this worker
        self._lock = threading.Lock()
        _BROKERS.add(self)

    def __repr__(self) -> str:
        return f"RedisBroker({self.safe_url!r})"

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        """Connection errors (after redis-py's own quick retries) become BrokerUnavailableError."""
        try:
            yield
        except (self._errors.ConnectionError, self._errors.TimeoutError) as exc:
            raise BrokerUnavailableError(
                f"The Redis broker at {self.safe_url} is unavailable ({type(exc).__name__}: {exc}). Fix: start "
                f"Redis or make it reachable from this machine (`redis-cli -u URL ping` answers PONG), check "
                f"the password if it uses AUTH, or set ASYNCFLOW_BROKER_URL to the right server. Task workers "
                f"retry with backoff; futures wait up to ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS.") from exc

    @staticmethod
    def _stream(task_key: str) -> str:
        return f"{_PREFIX}:tasks:{task_key}"

    @staticmethod
    def _run_key(run_id: str) -> str:
        return f"{_PREFIX}:run:{run_id}"

    def _group(self, stream: str) -> None:
        if stream in self._groups:
            return
        try:
            self._redis.xgroup_create(stream, _GROUP, id="0", mkstream=True)
        except self._errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(stream)

    def enqueue(self, run: QueuedRun) -> None:
        with self._talking():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._run_key(run.id), mapping={"state_type": "SCHEDULED", "state_name": "Scheduled",
                                                      "task_key": run.task_key, "task_name": run.task_name,
                                                      "created": time.time()})
            pipe.xadd(self._stream(run.task_key), {"id": run.id, "task_key": run.task_key,
                                                    "task_name": run.task_name, "payload": run.payload})
            pipe.execute()

    def _queued(self, stream: str, message_id: bytes, fields: dict[bytes, bytes]) -> QueuedRun | None:
        """The run of a stream entry; an entry without a run id (not written by asyncflow, or damaged)
        cannot be reported to anyone: it is logged and removed. Missing fields make the payload check
        fail the run with a clear message."""
        raw_id = fields.get(b"id")
        if raw_id is None:
            from .._logging import WARNING, log

            log(WARNING, "asyncflow.task_worker", f"Removed stream entry {message_id!r} of {stream}: it has no run "
                f"id (fields {sorted(fields)!r}); it was not written by asyncflow, or it is damaged.")
            pipe = self._redis.pipeline(transaction=True)
            pipe.xack(stream, _GROUP, message_id)
            pipe.xdel(stream, message_id)
            pipe.execute()
            return None
        run_id = raw_id.decode(errors="replace")
        task_key = stream[len(self._stream("")):]
        with self._lock:
            self._claimed[run_id] = (stream, message_id)
        return QueuedRun(run_id, task_key, fields.get(b"task_name", task_key.encode()).decode(errors="replace"),
                         fields.get(b"payload", b""))

    def claim(self, task_keys: list[str], worker_id: str, lease_seconds: float, limit: int) -> list[QueuedRun]:
        with self._talking():
            try:
                return self._claim(task_keys, worker_id, lease_seconds, limit)
            except self._errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._groups.clear()  # Redis restarted without its data: create the groups again
                return self._claim(task_keys, worker_id, lease_seconds, limit)

    def _claim(self, task_keys: list[str], worker_id: str, lease_seconds: float, limit: int) -> list[QueuedRun]:
        claimed: list[QueuedRun] = []
        streams = [self._stream(key) for key in task_keys]
        for stream in streams:
            self._group(stream)
        lease_ms = int(lease_seconds * 1000)
        for stream in streams:  # runs whose worker stopped renewing (died) come back first
            if len(claimed) >= limit:
                break
            _, messages, _ = self._redis.xautoclaim(stream, _GROUP, worker_id, min_idle_time=lease_ms,
                                                    start_id="0-0", count=limit - len(claimed))
            for message_id, fields in messages:
                if fields and (b"id" not in fields or not self._finished(fields[b"id"].decode(errors="replace"))):
                    queued = self._queued(stream, message_id, fields)
                    if queued is not None:
                        claimed.append(queued)
                elif fields is not None:  # finished meanwhile (its worker died after completing it)
                    pipe = self._redis.pipeline(transaction=True)
                    pipe.xack(stream, _GROUP, message_id)
                    pipe.xdel(stream, message_id)
                    pipe.execute()
        if len(claimed) < limit:
            replies = self._redis.xreadgroup(_GROUP, worker_id, {s: ">" for s in streams},
                                             count=limit - len(claimed)) or []
            for stream, messages in replies:
                name = stream.decode() if isinstance(stream, bytes) else stream
                for message_id, fields in messages:
                    queued = self._queued(name, message_id, fields)
                    if queued is not None:
                        claimed.append(queued)
        return claimed

    def _finished(self, run_id: str) -> bool:
        return bool(self._redis.hexists(self._run_key(run_id), "finished"))

    def renew(self, run_ids: list[str], worker_id: str, lease_seconds: float) -> None:
        with self._lock:
            entries = [self._claimed[r] for r in run_ids if r in self._claimed]
        with self._talking():
            for stream, message_id in entries:
                try:
                    self._redis.xclaim(stream, _GROUP, worker_id, min_idle_time=0, message_ids=[message_id],
                                       justid=True)
                except self._errors.ResponseError as exc:  # NOGROUP: Redis lost its data; the run goes on
                    if "NOGROUP" not in str(exc):
                        raise

    def set_state(self, run_id: str, worker_id: str, state_type: str, state_name: str) -> None:
        with self._talking():
            self._set_state_script(keys=[self._run_key(run_id)], args=[state_type, state_name])

    def complete(self, run_id: str, worker_id: str, state_type: str, state_name: str, message: str | None,
                 result: bytes | None) -> bool:
        """Record the outcome if no one did before, atomically (one script: a crash cannot leave a run
        marked finished without its state), then acknowledge and delete the stream entry."""
        retention = _settings.BROKER_RETENTION_SECONDS.value()
        with self._talking():
            first = bool(self._complete_script(keys=[self._run_key(run_id)], args=[
                time.time(), state_type, state_name, worker_id, message if message is not None else "",
                1 if message is not None else 0, result if result is not None else b"",
                1 if result is not None else 0, max(1, int(retention * 1000)) if retention > 0 else 0]))
            with self._lock:
                entry = self._claimed.get(run_id)
            if entry is not None:
                pipe = self._redis.pipeline(transaction=True)
                pipe.xack(entry[0], _GROUP, entry[1])
                pipe.xdel(entry[0], entry[1])  # the payload is no longer needed: the stream does not grow
                try:
                    pipe.execute()
                except self._errors.ResponseError as exc:  # NOGROUP: Redis lost its data (and the entry)
                    if "NOGROUP" not in str(exc):
                        raise
                with self._lock:
                    self._claimed.pop(run_id, None)
        return first

    def release(self, run_id: str, worker_id: str) -> None:
        """Hand a run back at once (graceful stop): queue it again and acknowledge this delivery."""
        with self._lock:
            entry = self._claimed.get(run_id)
        if entry is None:
            return
        stream, message_id = entry
        with self._talking():
            messages = self._redis.xrange(stream, min=message_id, max=message_id)
            pipe = self._redis.pipeline(transaction=True)
            if messages:
                pipe.xadd(stream, messages[0][1])
                pipe.xdel(stream, message_id)
            pipe.hset(self._run_key(run_id), mapping={"state_type": "SCHEDULED", "state_name": "Scheduled"})
            pipe.xack(stream, _GROUP, message_id)
            pipe.execute()
        with self._lock:
            self._claimed.pop(run_id, None)

    def outcome(self, run_id: str) -> RunOutcome | None:
        with self._talking():
            data = self._redis.hgetall(self._run_key(run_id))
        if not data:
            return None

        def text(field: bytes) -> str | None:
            value = data.get(field)
            return value.decode(errors="replace") if value is not None else None

        return RunOutcome(text(b"state_type") or "<missing>", text(b"state_name") or "", text(b"message"),
                          data.get(b"result"), b"finished" in data, text(b"task_name") or text(b"task_key"))

    def prune(self, older_than_seconds: float) -> int:
        """Delete the runs that finished more than `older_than_seconds` ago: their hashes (state, result)
        and any stream entry (pickled arguments) still left for them; return how many runs."""
        cutoff = time.time() - check_age(older_than_seconds)
        with self._talking():
            for stream in self._redis.scan_iter(match=self._stream("*"), count=1000, _type="STREAM"):
                self._prune_stream(stream, cutoff)
            removed = 0
            batch: list[Any] = []
            for key in self._redis.scan_iter(match=self._run_key("*"), count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += self._prune_runs(batch, cutoff)
                    batch = []
            return removed + (self._prune_runs(batch, cutoff) if batch else 0)

    def _old(self, finished: bytes | None, cutoff: float) -> bool:
        try:
            return finished is not None and float(finished) < cutoff
        except ValueError:  # a damaged timestamp: keep the run (it is not known to be old)
            return False

    def _prune_runs(self, keys: list[Any], cutoff: float) -> int:
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "finished")
        old = [key for key, finished in zip(keys, pipe.execute(), strict=True) if self._old(finished, cutoff)]
        return int(self._redis.delete(*old)) if old else 0

    def _prune_stream(self, stream: Any, cutoff: float) -> None:
        start = "-"
        while True:
            entries = self._redis.xrange(stream, min=start, max="+", count=500)
            if not entries:
                return
            pipe = self._redis.pipeline(transaction=False)
            for _, fields in entries:
                pipe.hget(self._run_key((fields.get(b"id") or b"").decode(errors="replace")), "finished")
            done = [message_id for (message_id, _), finished in zip(entries, pipe.execute(), strict=True)
                    if self._old(finished, cutoff)]
            if done:
                pipe = self._redis.pipeline(transaction=True)
                pipe.xack(stream, _GROUP, *done)
                pipe.xdel(stream, *done)
                try:
                    pipe.execute()
                except self._errors.ResponseError as exc:  # no consumer group (no worker ever read it)
                    if "NOGROUP" not in str(exc):
                        raise
                    self._redis.xdel(stream, *done)
            last = entries[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else last)

    def close(self) -> None:
        self._redis.close()
