"""Background tasks under broker faults (issue 11; review 5d, D4, H4, W1, U5, U8, S4): damaged rows and
entries, results that cannot be loaded, runs the broker lost, Redis restarts, bad SQLite paths, and
retention. Real SQLite files, real redis-server processes started here (restarted mid-test), real
worker subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import anyio
import pytest

TASKS = """
import os, time
from asyncflow import task

@task
def double(x: int) -> int:
    return 2 * x

@task
def slow(marker: str, x: int, seconds: float) -> int:
    with open(marker, "a") as fh:
        fh.write(f"{x}\\n")
    time.sleep(seconds)
    return x

@task
def make_model(n: int):
    import wonly_models  # importable only where the worker runs
    return wonly_models.Model(n)

@task
def fail_with_model() -> None:
    import wonly_models
    raise wonly_models.ModelError("the model is broken")

@task
def unserved() -> None:
    return None

@task
def boom() -> None:
    raise KeyError("missing")
"""

WORKER_ONLY = """
class Model:
    def __init__(self, n):
        self.n = n

class ModelError(Exception):
    pass
"""


# -- a redis-server of our own (restartable on the same port) -------------------------------------------
class RedisServer:
    def __init__(self, workdir, aof: bool) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("ASYNCFLOW_REQUIRE_REDIS"):
                pytest.fail("redis-server is not installed (apt-get install redis-server)")
            pytest.skip("redis-server is not installed: apt-get install redis-server")
        self.binary, self.workdir, self.aof = binary, workdir, aof
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.aof
                       else ["--appendonly", "no"])
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      *persistence, "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.RedisError:  # refused, or still loading the AOF
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-faults"), aof=False)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def broker_url(request, monkeypatch, app):
    """The embedded SQLite broker (a real file under ASYNCFLOW_HOME), a real Redis and a real PostgreSQL."""
    if request.param == "sqlite":
        monkeypatch.delenv("ASYNCFLOW_BROKER_URL", raising=False)
        return None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("ASYNCFLOW_BROKER_URL", url)
        return url
    server = request.getfixturevalue("shared_redis")
    server.client().flushdb()
    monkeypatch.setenv("ASYNCFLOW_BROKER_URL", server.url)
    return server.url


@pytest.fixture()
def app(tmp_path, monkeypatch):
    """A module of tasks importable here and in workers; `wonly_models` importable only in workers. The
    SQLite broker unless the test asks for `broker_url` or sets ASYNCFLOW_BROKER_URL."""
    monkeypatch.delenv("ASYNCFLOW_BROKER_URL", raising=False)
    (tmp_path / "faults_app.py").write_text(TASKS)
    (tmp_path / "worker_only").mkdir()
    (tmp_path / "worker_only" / "wonly_models.py").write_text(WORKER_ONLY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ASYNCFLOW_TASK_WORKER_LEASE_SECONDS", "2")
    sys.modules.pop("faults_app", None)
    import faults_app

    yield faults_app
    sys.modules.pop("faults_app", None)


def start_worker(tmp_path, *tasks: str, limit: int = 10, **env: str) -> subprocess.Popen:
    """A worker process (`python -m asyncflow.task_worker`); its output goes to a file."""
    environ = {**os.environ, **env,
               "PYTHONPATH": os.pathsep.join([str(tmp_path), str(tmp_path / "worker_only"),
                                              os.environ.get("PYTHONPATH", "")])}
    log = open(tmp_path / f"worker-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115 - closed in stop_worker()
    proc = subprocess.Popen([sys.executable, "-m", "asyncflow.task_worker", *[f"faults_app:{t}" for t in tasks],
                             "--limit", str(limit)], cwd=tmp_path, env=environ, stdout=log,
                            stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def stop_worker(proc: subprocess.Popen) -> str:
    """SIGTERM the worker (if it still runs) and return its output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    proc.log.seek(0)  # type: ignore[attr-defined]
    output = proc.log.read()  # type: ignore[attr-defined]
    proc.log.close()  # type: ignore[attr-defined]
    return output


# -- reaching into the brokers' storage, as damage and data loss do -------------------------------------
def sqlite_db() -> sqlite3.Connection:
    return sqlite3.connect(os.path.join(os.environ["ASYNCFLOW_HOME"], "asyncflow.db"), isolation_level=None)


def flipped(blob: bytes, position: int) -> bytes:
    data = bytearray(blob)
    data[position] ^= 0x01
    return bytes(data)


def redis_entry(client, run_id: str):
    """(stream, message id, fields) of the run's stream entry."""
    for stream in client.scan_iter(match="asyncflow:tasks:*"):
        for message_id, fields in client.xrange(stream):
            if fields.get(b"id") == run_id.encode():
                return stream, message_id, fields
    raise AssertionError(f"no stream entry for {run_id}")


def pg_sql(url: str, statement: str, *params):
    """One statement on the PostgreSQL broker's database (`?` placeholders, as for SQLite)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else cur.rowcount


def read_blob(broker_url, run_id: str, field: str) -> bytes | None:
    if broker_url is None:
        db = sqlite_db()
        row = db.execute(f"SELECT {field} FROM asyncflow_task_queue WHERE id = ?", (run_id,)).fetchone()
        db.close()
        return row[0]
    if broker_url.startswith("postgresql"):
        value = pg_sql(broker_url, f"SELECT {field} FROM asyncflow_task_queue WHERE id = ?", run_id)[0][0]
        return bytes(value) if isinstance(value, memoryview) else value
    import redis

    client = redis.Redis.from_url(broker_url)
    if field == "payload":
        return redis_entry(client, run_id)[2][b"payload"]
    return client.hget(f"asyncflow:run:{run_id}", field)


def write_field(broker_url, run_id: str, field: str, value) -> None:
    """Overwrite one field of a run's row (SQLite) or hash / stream entry (Redis); None removes it."""
    if broker_url is None:
        db = sqlite_db()
        assert db.execute(f"UPDATE asyncflow_task_queue SET {field} = ? WHERE id = ?", (value, run_id)).rowcount == 1
        db.close()
        return
    if broker_url.startswith("postgresql"):
        assert pg_sql(broker_url, f"UPDATE asyncflow_task_queue SET {field} = ? WHERE id = ?", value, run_id) == 1
        return
    import redis

    client = redis.Redis.from_url(broker_url)
    if field == "payload":  # stream entries are immutable: replace it with a damaged copy
        stream, message_id, fields = redis_entry(client, run_id)
        client.xdel(stream, message_id)
        client.xadd(stream, {**fields, b"payload": value})
    elif value is None:
        client.hdel(f"asyncflow:run:{run_id}", field)
    else:
        client.hset(f"asyncflow:run:{run_id}", field, value)


def forget_run(broker_url, run_id: str) -> None:
    """The broker loses the run: the row is deleted / the hash and the stream entry are gone."""
    if broker_url is None:
        db = sqlite_db()
        assert db.execute("DELETE FROM asyncflow_task_queue WHERE id = ?", (run_id,)).rowcount == 1
        db.close()
        return
    if broker_url.startswith("postgresql"):
        assert pg_sql(broker_url, "DELETE FROM asyncflow_task_queue WHERE id = ?", run_id) == 1
        return
    import redis

    client = redis.Redis.from_url(broker_url)
    stream, message_id, _ = redis_entry(client, run_id)
    client.xdel(stream, message_id)
    assert client.delete(f"asyncflow:run:{run_id}") == 1


# -- checksums ------------------------------------------------------------------------------------------
def test_every_single_byte_change_in_a_sealed_blob_is_detected():
    from asyncflow._workers.blob import DamagedBlob, seal, unseal

    run_id = str(uuid.uuid4())
    data = b"\x80\x05" + bytes(range(256)) * 2
    blob = seal(data, "result", run_id)
    assert unseal(blob, "result", run_id) == data
    for position in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(blob)
            damaged[position] ^= mask
            with pytest.raises(DamagedBlob):
                unseal(bytes(damaged), "result", run_id)
    for cut in range(len(blob)):
        with pytest.raises(DamagedBlob):
            unseal(blob[:cut], "result", run_id)
    with pytest.raises(DamagedBlob, match="another run"):  # a valid blob of another run, or of the payload
        unseal(blob, "result", str(uuid.uuid4()))
    with pytest.raises(DamagedBlob, match="another run"):
        unseal(blob, "payload", run_id)
    with pytest.raises(DamagedBlob, match="no checksum"):
        unseal(data, "result", run_id)


def test_a_damaged_queued_payload_fails_the_run_saying_the_payload_is_damaged(app, tmp_path, broker_url):
    import cloudpickle

    from asyncflow.exceptions import BrokerDataError

    futures = [app.double.delay(i) for i in range(4)]
    for future, position in zip(futures, [0, 7, None, -1], strict=True):
        run_id = str(future.task_run_id)
        payload = read_blob(broker_url, run_id, "payload")
        write_field(broker_url, run_id, "payload",
                    flipped(payload, len(payload) // 2 if position is None else position))
    legacy = app.double.delay(5)  # a payload without a checksum (as written before checksums existed)
    write_field(broker_url, str(legacy.task_run_id), "payload", cloudpickle.dumps(({"x": 5}, [])))
    proc = start_worker(tmp_path, "double")
    try:
        for future in futures:
            with pytest.raises(BrokerDataError) as caught:
                future.result(timeout=60)
            message = str(caught.value)
            assert "queued payload" in message and "is damaged" in message, message
            assert str(future.task_run_id) in message and "'double'" in message, message
            assert future.state.name == "Failed"
        with pytest.raises(BrokerDataError, match="no checksum"):
            legacy.result(timeout=60)
        assert app.double.delay(21).result(timeout=60) == 42  # the worker goes on serving
    finally:
        output = stop_worker(proc)
    assert proc.returncode == 0, output
    from asyncflow.testing import isolated_home

    with isolated_home(os.environ["ASYNCFLOW_HOME"]) as store:  # the worker's run store says it too
        states = store.read_states(futures[0].task_run_id)
    assert states[-1].name == "Failed" and "queued payload" in states[-1].message, states


def test_a_damaged_stored_result_raises_a_clear_error_instead_of_a_value(app, tmp_path, broker_url):
    from asyncflow.exceptions import BrokerDataError
    from asyncflow.task_worker import DelayedFuture

    first, second = app.double.delay(21), app.double.delay(50)
    proc = start_worker(tmp_path, "double")
    try:
        assert first.result(timeout=60) == 42 and second.result(timeout=60) == 100
    finally:
        stop_worker(proc)
    run_id = str(first.task_run_id)
    good = read_blob(broker_url, run_id, "result")
    for position in [0, 7, len(good) // 2, len(good) - 1]:
        write_field(broker_url, run_id, "result", flipped(good, position))
        future = DelayedFuture(run_id)
        with pytest.raises(BrokerDataError) as caught:
            future.result(timeout=10)
        message = str(caught.value)
        assert "stored result" in message and "is damaged" in message, message
        assert run_id in message and "'double'" in message, message
        assert future.state.is_completed()  # what the worker recorded; its value is not handed out
        with pytest.raises(BrokerDataError):
            future.state.result()
    write_field(broker_url, run_id, "result", read_blob(broker_url, str(second.task_run_id), "result"))
    with pytest.raises(BrokerDataError, match="another run"):  # another run's (valid) result
        DelayedFuture(run_id).result(timeout=10)
    write_field(broker_url, run_id, "result", None)
    with pytest.raises(BrokerDataError, match="missing"):
        DelayedFuture(run_id).result(timeout=10)
    write_field(broker_url, run_id, "result", good)
    assert DelayedFuture(run_id).result(timeout=10) == 42


def test_a_result_only_the_worker_can_import_raises_naming_the_run_the_task_and_the_cause(app, tmp_path, broker_url):
    from asyncflow.exceptions import BrokerDataError

    assert "wonly_models" not in sys.modules
    model, failing = app.make_model.delay(3), app.fail_with_model.delay()
    proc = start_worker(tmp_path, "make_model", "fail_with_model")
    try:
        with pytest.raises(BrokerDataError) as caught:
            model.result(timeout=60)
        message = str(caught.value)
        assert str(model.task_run_id) in message and "'make_model'" in message, message
        assert "No module named 'wonly_models'" in message and "cannot be loaded in this process" in message, message
        assert model.state.is_completed()
        with pytest.raises(BrokerDataError):
            model.result(raise_on_failure=False)  # never an exception object as the value

        with pytest.raises(BrokerDataError) as caught:
            failing.result(timeout=60)
        message = str(caught.value)
        assert str(failing.task_run_id) in message and "'fail_with_model'" in message, message
        assert "exception" in message and "wonly_models" in message, message
        assert failing.state.is_failed()
    finally:
        stop_worker(proc)


def test_an_unknown_state_in_the_broker_is_a_clear_error(app, broker_url):
    from asyncflow.exceptions import BrokerDataError
    from asyncflow.task_worker import DelayedFuture

    future = app.double.delay(1)
    run_id = str(future.task_run_id)
    write_field(broker_url, run_id, "state_type", "BOGUS")
    for attempt in (lambda: DelayedFuture(run_id).state, lambda: DelayedFuture(run_id).result(timeout=5)):
        with pytest.raises(BrokerDataError) as caught:
            attempt()
        message = str(caught.value)
        assert "'BOGUS'" in message and run_id in message and "'double'" in message, message


# -- runs the broker does not know ------------------------------------------------------------------------
def test_a_run_the_broker_lost_raises_after_the_grace_period(app, broker_url, monkeypatch):
    from asyncflow.exceptions import LostRunError
    from asyncflow.task_worker import DelayedFuture

    monkeypatch.setenv("ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS", "0.3")
    future = app.double.delay(1)
    forget_run(broker_url, str(future.task_run_id))
    with pytest.raises(LostRunError) as caught:
        future.result(timeout=60)
    message = str(caught.value)
    assert str(future.task_run_id) in message and "ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS" in message, message
    assert future.state.name == "Crashed" and future.done()

    never = DelayedFuture(uuid.uuid4())  # an id the broker never had

    async def awaited():
        with anyio.fail_after(60):
            return await never

    with pytest.raises(LostRunError):
        anyio.run(awaited)


def test_a_queued_run_that_no_worker_serves_yet_keeps_waiting(app, tmp_path, broker_url, monkeypatch):
    monkeypatch.setenv("ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS", "0.2")
    future = app.double.delay(4)
    with pytest.raises(TimeoutError):  # many grace periods long: it is in the broker, so it is not lost
        future.result(timeout=1.5)
    assert future.state.name == "Scheduled"
    proc = start_worker(tmp_path, "double")
    try:
        assert future.result(timeout=60) == 8
    finally:
        stop_worker(proc)


def test_a_run_whose_upstream_failed_resolves_instead_of_waiting(app, tmp_path, broker_url):
    from asyncflow.exceptions import UpstreamTaskError

    upstream = app.boom.delay()
    downstream = app.double.apply_async((1,), wait_for=[upstream])
    proc = start_worker(tmp_path, "boom", "double")
    try:
        with pytest.raises(KeyError, match="missing"):
            upstream.result(timeout=60)
        with pytest.raises(UpstreamTaskError, match=str(upstream.task_run_id)):
            downstream.result(timeout=60)
        assert downstream.state.name == "NotReady" and downstream.done()
    finally:
        stop_worker(proc)


# -- broker unavailable ------------------------------------------------------------------------------------
def test_delay_while_redis_is_down_raises_a_clear_error_naming_the_url(app, monkeypatch):
    from asyncflow.exceptions import BrokerUnavailableError

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("ASYNCFLOW_BROKER_URL", f"redis://:s3cret@127.0.0.1:{port}/0")
    with pytest.raises(BrokerUnavailableError) as caught:
        app.double.delay(1)
    message = str(caught.value)
    assert f"redis://:***@127.0.0.1:{port}/0" in message and "s3cret" not in message, message
    assert "ASYNCFLOW_BROKER_URL" in message, message
    assert isinstance(caught.value, ConnectionError)

    async def delayed_in_async_code():  # .delay() returns at once; the future says what went wrong
        future = app.double.delay(2)
        with anyio.fail_after(60), pytest.raises(BrokerUnavailableError, match=str(port)):
            await future
        return future

    assert anyio.run(delayed_in_async_code).state.name == "Failed"


def test_a_bad_sqlite_broker_path_is_a_clear_error_naming_the_path(app, tmp_path, monkeypatch):
    from asyncflow.exceptions import BrokerUnavailableError, SettingError

    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "a-directory").mkdir()
    for path in [tmp_path / "a-file" / "queue.db", tmp_path / "a-directory"]:
        monkeypatch.setenv("ASYNCFLOW_BROKER_URL", f"sqlite:///{path}")
        # the setting's check refuses what it can see from the path; the broker the rest
        with pytest.raises((BrokerUnavailableError, SettingError)) as caught:
            app.double.delay(1)
        message = str(caught.value)
        assert str(path) in message and "ASYNCFLOW_BROKER_URL" in message, message


def test_a_worker_survives_a_redis_restart_and_finishes_its_runs(app, tmp_path, monkeypatch):
    """D4: with AOF, Redis killed (SIGKILL) while runs are in flight and queued, down ~2 s, started again
    on the same port: the worker goes on, every run completes once recorded, `.delay()` meanwhile raises
    a clear error, and a future waiting through the outage resolves."""
    from asyncflow.exceptions import BrokerUnavailableError

    (tmp_path / "redis-aof").mkdir()
    server = RedisServer(tmp_path / "redis-aof", aof=True)
    monkeypatch.setenv("ASYNCFLOW_BROKER_URL", server.url)
    monkeypatch.setenv("ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS", "60")
    marker = tmp_path / "started.txt"
    try:
        futures = [app.slow.delay(str(marker), i, 0.4) for i in range(12)]
        proc = start_worker(tmp_path, "slow", limit=3)
        try:
            deadline = time.monotonic() + 60
            while (not marker.exists() or len(marker.read_text().split()) < 2) and time.monotonic() < deadline:
                time.sleep(0.02)
            waited: list[object] = []
            waiter = threading.Thread(target=lambda: waited.append(futures[-1].result(timeout=120)))
            waiter.start()
            server.kill()
            with pytest.raises(BrokerUnavailableError, match=str(server.port)):
                app.slow.delay(str(marker), 99, 0.0)
            time.sleep(2)  # the outage: runs in flight finish meanwhile and wait to report
            assert proc.poll() is None, "the worker exited while Redis was down"
            server.start()
            assert [f.result(timeout=120) for f in futures] == list(range(12))
            waiter.join(120)
            assert waited == [11]
            assert app.slow.delay(str(marker), 12, 0.0).result(timeout=60) == 12  # and it goes on serving
            assert proc.poll() is None
        finally:
            output = stop_worker(proc)
        assert proc.returncode == 0, output
        assert "is unavailable" in output and "reachable again" in output, output
        executed = [int(x) for x in marker.read_text().split()]
        assert set(executed) == set(range(13))  # at least once each (a lease may expire while Redis is down)
    finally:
        server.stop()


def test_a_worker_survives_a_redis_restart_that_lost_the_data_and_lost_runs_fail_their_futures(
        app, tmp_path, monkeypatch):
    """D4, H4: Redis without persistence restarts: the queued runs are gone; their futures raise after
    the grace period instead of waiting for ever; the worker recreates its consumer group and serves
    new runs."""
    from asyncflow.exceptions import LostRunError

    (tmp_path / "redis-nosave").mkdir()
    server = RedisServer(tmp_path / "redis-nosave", aof=False)
    monkeypatch.setenv("ASYNCFLOW_BROKER_URL", server.url)
    monkeypatch.setenv("ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS", "1")
    try:
        proc = start_worker(tmp_path, "double")
        try:
            assert app.double.delay(1).result(timeout=60) == 2
            queued = [app.unserved.delay() for _ in range(3)]
            server.kill()
            server.start()
            for future in queued:
                with pytest.raises(LostRunError, match=str(future.task_run_id)):
                    future.result(timeout=60)
            assert app.double.delay(2).result(timeout=60) == 4
            assert proc.poll() is None
        finally:
            output = stop_worker(proc)
        assert proc.returncode == 0, output
    finally:
        server.stop()


# -- retention ----------------------------------------------------------------------------------------------
def test_finished_redis_runs_expire_after_the_retention_setting(app, tmp_path, shared_redis, monkeypatch):
    client = shared_redis.client()
    client.flushdb()
    monkeypatch.setenv("ASYNCFLOW_BROKER_URL", shared_redis.url)
    monkeypatch.setenv("ASYNCFLOW_BROKER_RETENTION_SECONDS", "3600")
    waiting = app.unserved.delay()
    proc = start_worker(tmp_path, "double", ASYNCFLOW_BROKER_RETENTION_SECONDS="3600")
    try:
        done = app.double.delay(1)
        assert done.result(timeout=60) == 2
    finally:
        stop_worker(proc)
    assert 0 < client.ttl(f"asyncflow:run:{done.task_run_id}") <= 3600
    assert client.ttl(f"asyncflow:run:{waiting.task_run_id}") == -1  # not finished: kept

    proc = start_worker(tmp_path, "double", ASYNCFLOW_BROKER_RETENTION_SECONDS="0")  # 0: keep for ever
    try:
        kept = app.double.delay(2)
        assert kept.result(timeout=60) == 4
    finally:
        stop_worker(proc)
    assert client.ttl(f"asyncflow:run:{kept.task_run_id}") == -1


def test_prune_removes_finished_runs_older_than_the_age_and_keeps_the_rest(app, tmp_path, broker_url, monkeypatch):
    from asyncflow._workers.broker import get_broker
    from asyncflow.exceptions import LostRunError

    monkeypatch.setenv("ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS", "0.2")
    waiting = app.unserved.delay()
    proc = start_worker(tmp_path, "double")
    try:
        done = [app.double.delay(i) for i in range(3)]
        assert [f.result(timeout=60) for f in done] == [0, 2, 4]
    finally:
        stop_worker(proc)
    broker = get_broker()
    assert broker.prune(3600) == 0  # younger than an hour: kept
    assert broker.prune(0) == 3
    assert broker.prune(0) == 0
    with pytest.raises(ValueError, match="older_than_seconds"):
        broker.prune(-1)
    if broker_url is None:
        db = sqlite_db()
        assert [r[0] for r in db.execute("SELECT id FROM asyncflow_task_queue")] == [str(waiting.task_run_id)]
        db.close()
    elif broker_url.startswith("postgresql"):
        assert pg_sql(broker_url, "SELECT id FROM asyncflow_task_queue") == [(str(waiting.task_run_id),)]
    else:
        import redis

        client = redis.Redis.from_url(broker_url)
        assert sorted(client.scan_iter(match="asyncflow:run:*")) == [f"asyncflow:run:{waiting.task_run_id}".encode()]
        entries = [fields[b"id"] for stream in client.scan_iter(match="asyncflow:tasks:*")
                   for _, fields in client.xrange(stream)]
        assert entries == [str(waiting.task_run_id).encode()]
    assert waiting.state.name == "Scheduled"
    with pytest.raises(LostRunError, match="pruned"):
        type(done[0])(done[0].task_run_id).result(timeout=60)


def test_a_sqlite_worker_prunes_finished_runs_past_the_retention(app, tmp_path):
    proc = start_worker(tmp_path, "double")
    try:
        done = app.double.delay(1)
        assert done.result(timeout=60) == 2
    finally:
        stop_worker(proc)
    waiting = app.unserved.delay()
    time.sleep(0.3)
    proc = start_worker(tmp_path, "double", ASYNCFLOW_BROKER_RETENTION_SECONDS="0.2")  # prunes as it starts
    try:
        assert app.double.delay(2).result(timeout=60) == 4
    finally:
        output = stop_worker(proc)
    db = sqlite_db()
    ids = {r[0] for r in db.execute("SELECT id FROM asyncflow_task_queue")}
    db.close()
    assert str(done.task_run_id) not in ids and str(waiting.task_run_id) in ids, output
    assert "Pruned 1 finished run" in output, output
