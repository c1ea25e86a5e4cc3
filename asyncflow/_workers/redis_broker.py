"""The Redis broker, for workers on many machines: one Redis stream per task, one consumer group.

- enqueue: XADD to the task's stream, and a hash per run for its outcome;
- claim: XAUTOCLAIM first (runs whose lease expired: their worker died), then XREADGROUP for new ones;
- the lease is the pending entry's idle time: renewing is XCLAIM by the same worker (idle time reset);
- complete: HSETNX on the run's `finished` field: only the first completion is recorded; then XACK.
"""

from __future__ import annotations

import threading
import time
import weakref

from .. import _fork
from .broker import QueuedRun, RunOutcome

_GROUP = "asyncflow-workers"
_COMPLETE = """
if redis.call('HSETNX', KEYS[1], 'finished', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state_type', ARGV[2], 'state_name', ARGV[3], 'worker', ARGV[4])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'message', ARGV[5]) end
if ARGV[8] == '1' then redis.call('HSET', KEYS[1], 'result', ARGV[7]) end
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


class RedisBroker:
    def __init__(self, url: str) -> None:
        try:
            import redis
        except ImportError:
            raise ImportError(
                "The Redis broker needs the redis package: pip install 'asyncflow-anyio[redis]'.") from None
        self.url = url
        self._redis = redis.Redis.from_url(url)
        self._errors = redis.exceptions
        self._groups: set[str] = set()
        self._complete_script = self._redis.register_script(_COMPLETE)
        self._claimed: dict[str, tuple[str, bytes]] = {}  # run id -> (stream, message id), for this worker
        self._lock = threading.Lock()
        _BROKERS.add(self)

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
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._run_key(run.id), mapping={"state_type": "SCHEDULED", "state_name": "Scheduled",
                                                  "task_key": run.task_key, "created": time.time()})
        pipe.xadd(self._stream(run.task_key), {"id": run.id, "task_key": run.task_key, "task_name": run.task_name,
                                                "payload": run.payload})
        pipe.execute()

    def _queued(self, stream: str, message_id: bytes, fields: dict[bytes, bytes]) -> QueuedRun:
        run_id = fields[b"id"].decode()
        with self._lock:
            self._claimed[run_id] = (stream, message_id)
        return QueuedRun(run_id, fields[b"task_key"].decode(), fields[b"task_name"].decode(), fields[b"payload"])

    def claim(self, task_keys: list[str], worker_id: str, lease_seconds: float, limit: int) -> list[QueuedRun]:
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
                if fields and not self._finished(fields[b"id"].decode()):
                    claimed.append(self._queued(stream, message_id, fields))
                elif fields is not None:
                    self._redis.xack(stream, _GROUP, message_id)
        if len(claimed) < limit:
            replies = self._redis.xreadgroup(_GROUP, worker_id, {s: ">" for s in streams},
                                             count=limit - len(claimed)) or []
            for stream, messages in replies:
                name = stream.decode() if isinstance(stream, bytes) else stream
                for message_id, fields in messages:
                    claimed.append(self._queued(name, message_id, fields))
        return claimed

    def _finished(self, run_id: str) -> bool:
        return bool(self._redis.hexists(self._run_key(run_id), "finished"))

    def renew(self, run_ids: list[str], worker_id: str, lease_seconds: float) -> None:
        with self._lock:
            entries = [self._claimed[r] for r in run_ids if r in self._claimed]
        for stream, message_id in entries:
            self._redis.xclaim(stream, _GROUP, worker_id, min_idle_time=0, message_ids=[message_id], justid=True)

    def set_state(self, run_id: str, worker_id: str, state_type: str, state_name: str) -> None:
        if not self._finished(run_id):
            self._redis.hset(self._run_key(run_id), mapping={"state_type": state_type, "state_name": state_name})

    def complete(self, run_id: str, worker_id: str, state_type: str, state_name: str, message: str | None,
                 result: bytes | None) -> bool:
        """Record the outcome if no one did before, atomically (one script: a crash cannot leave a run
        marked finished without its state), then acknowledge and delete the stream entry."""
        first = bool(self._complete_script(keys=[self._run_key(run_id)], args=[
            time.time(), state_type, state_name, worker_id, message if message is not None else "",
            1 if message is not None else 0, result if result is not None else b"", 1 if result is not None else 0]))
        with self._lock:
            entry = self._claimed.pop(run_id, None)
        if entry is not None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.xack(entry[0], _GROUP, entry[1])
            pipe.xdel(entry[0], entry[1])  # the payload is no longer needed: the stream does not grow
            pipe.execute()
        return first

    def release(self, run_id: str, worker_id: str) -> None:
        """Hand a run back at once (graceful stop): queue it again and acknowledge this delivery."""
        with self._lock:
            entry = self._claimed.pop(run_id, None)
        if entry is None:
            return
        stream, message_id = entry
        messages = self._redis.xrange(stream, min=message_id, max=message_id)
        pipe = self._redis.pipeline(transaction=True)
        if messages:
            pipe.xadd(stream, messages[0][1])
        pipe.hset(self._run_key(run_id), mapping={"state_type": "SCHEDULED", "state_name": "Scheduled"})
        pipe.xack(stream, _GROUP, message_id)
        pipe.execute()

    def outcome(self, run_id: str) -> RunOutcome | None:
        data = self._redis.hgetall(self._run_key(run_id))
        if not data:
            return None
        message = data.get(b"message")
        return RunOutcome(data[b"state_type"].decode(), data[b"state_name"].decode(),
                          message.decode() if message is not None else None, data.get(b"result"),
                          b"finished" in data)

    def close(self) -> None:
        self._redis.close()
