"""The PostgreSQL broker (issue 14): leases on SELECT … FOR UPDATE SKIP LOCKED, LISTEN/NOTIFY to wake idle
workers, the PostgreSQL store's database as the default broker. The behaviours every broker shares run in
test_background.py and test_broker_faults.py (parametrized with "postgres"); these are its own. A real
PostgreSQL server, real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from asyncflow._exceptions import BrokerUnavailableError
from asyncflow._workers.broker import QueuedRun
from asyncflow._workers.postgres_broker import PostgresBroker


@pytest.fixture
def broker(postgres_url):
    broker = PostgresBroker(postgres_url)
    yield broker
    broker.close()


def queued(task_key: str = "k") -> QueuedRun:
    return QueuedRun(str(uuid.uuid4()), task_key, "t", b"payload")


def test_concurrent_claims_never_take_the_same_run(broker, postgres_url):
    runs = [queued() for _ in range(300)]
    for run in runs:
        broker.enqueue(run)
    claimers = [PostgresBroker(postgres_url) for _ in range(4)]
    taken: list[list[str]] = [[] for _ in claimers]

    def claim(i: int) -> None:
        while True:
            got = claimers[i].claim(["k"], f"w{i}", 30, 7)
            if not got:
                return
            taken[i].extend(run.id for run in got)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claimers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for claimer in claimers:
        claimer.close()
    everything = [run_id for ids in taken for run_id in ids]
    assert sorted(everything) == sorted(run.id for run in runs)  # each run exactly once
    assert sum(1 for ids in taken if ids) >= 2  # they took turns (SKIP LOCKED: nobody waited for the others)


def test_a_lease_that_expires_makes_the_run_claimable_again_and_only_the_first_completion_counts(broker, postgres_url):
    run = queued()
    broker.enqueue(run)
    [first] = broker.claim(["k"], "w1", 60, 10)
    assert first.attempts == 1 and broker.claim(["k"], "w2", 30, 10) == []  # leased: nobody else takes it
    expire_leases(postgres_url)  # w1 stopped renewing and its lease ran out
    [again] = broker.claim(["k"], "w2", 30, 10)
    assert again.id == run.id and again.attempts == 2
    assert broker.complete(run.id, "w2", "COMPLETED", "Completed", None, b"r2") is True
    assert broker.complete(run.id, "w1", "COMPLETED", "Completed", None, b"r1") is False
    assert broker.complete(run.id, "w2", "COMPLETED", "Completed", None, b"r2") is True  # a retried call
    outcome = broker.outcome(run.id)
    assert outcome.finished and outcome.result == b"r2" and outcome.state_name == "Completed"


def expire_leases(url: str) -> None:
    """Every lease runs out now, as if its time had passed (a test that sleeps through a short lease is a race
    under load: a slow step and the lease is gone before the test looks)."""
    from asyncflow._store.postgres_base import connect

    with connect(url) as conn:
        conn.execute("UPDATE asyncflow_task_queue SET lease_expires = extract(epoch from clock_timestamp()) - 1 "
                      "WHERE lease_expires IS NOT NULL")


class WatchedWakes(threading.Condition):
    """The broker's wake-up condition, recording each wait of `wait_for_work`: the timeout it waited with and
    whether a wake-up (a notification, an interruption) ended it rather than that timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[float | None, bool]] = []
        self.waiting = threading.Event()  # a wait has begun

    def wait_for(self, predicate, timeout=None):  # type: ignore[no-untyped-def]
        self.waiting.set()
        woken = super().wait_for(predicate, timeout)
        self.waits.append((timeout, woken))
        return woken


def wake_ups(broker: PostgresBroker) -> int:
    with broker._wakes:
        return broker._generation


def until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60  # a hang guard, not a performance bound
    while not condition():
        assert time.monotonic() < deadline, f"{what} within 60 s"
        time.sleep(0.01)


def listening(broker: PostgresBroker) -> WatchedWakes:
    """Start the broker's listener, wait until it LISTENs (its first look-again wake-up has happened: it would
    end a wait begun before it, as a spurious wake-up), then watch the broker's waits."""
    broker.wait_for_work(["nothing"], 0.0)
    until(lambda: wake_ups(broker) >= 1, "the listener started")
    watched = broker._wakes = WatchedWakes()
    return watched


def test_an_idle_worker_is_woken_by_a_notification_not_by_polling(broker, postgres_url):
    wakes = listening(broker)
    waiter = threading.Thread(target=broker.wait_for_work, args=(["k"], 120.0))
    waiter.start()
    assert wakes.waiting.wait(60)  # nothing queued: it waits
    other = PostgresBroker(postgres_url)  # another process would do the same
    other.enqueue(queued())
    waiter.join(60)
    other.close()
    assert not waiter.is_alive()
    # one wait, for the caller's whole timeout (no polling interval), ended by a wake-up: the notification
    assert wakes.waits == [(120.0, True)]
    broker.wait_for_work(["k"], 120.0)  # a run is claimable now: no wait at all
    assert len(wakes.waits) == 1


def test_an_idle_wait_ends_when_a_lease_expires_and_when_interrupted(broker):
    wakes = listening(broker)
    run = queued()
    seen = wake_ups(broker)
    broker.enqueue(run)
    until(lambda: wake_ups(broker) > seen, "the enqueue's own notification arrived")  # (it would end the wait)
    lease = 0.5
    broker.claim(["k"], "w1", lease, 10)
    broker.wait_for_work(["k"], 60.0)  # the worker holding it died: its lease expires
    # the wait lasted until the lease's end, not the caller's timeout (none at all if the lease had already
    # expired when it looked: a slow machine) ...
    assert all(timeout is not None and timeout <= lease + 0.011 for timeout, _ in wakes.waits), wakes.waits
    assert broker.claim(["k"], "w2", 30, 10)[0].id == run.id  # ... and not less: the run is claimable
    wakes.waiting.clear()
    waiter = threading.Thread(target=broker.wait_for_work, args=(["other"], 120.0))
    waiter.start()
    assert wakes.waiting.wait(60)
    broker.interrupt_waits()
    waiter.join(60)
    assert not waiter.is_alive() and wakes.waits[-1] == (120.0, True)  # ended by the interruption


def test_a_broker_that_cannot_be_reached_is_a_clear_error_without_the_password():
    from pg_server import free_port

    with pytest.raises(BrokerUnavailableError) as info:
        PostgresBroker(f"postgresql://etl:hunter2@127.0.0.1:{free_port()}/queue")
    message = str(info.value)
    assert "hunter2" not in message and "postgresql://etl:***@127.0.0.1" in message and "pg_isready" in message


def test_the_postgres_store_database_is_the_default_broker(postgres_url, monkeypatch):
    from asyncflow import _settings
    from asyncflow._workers.broker import get_broker

    monkeypatch.delenv("ASYNCFLOW_BROKER_URL", raising=False)
    monkeypatch.setenv("ASYNCFLOW_STORE", postgres_url)
    _settings.reload()
    broker = get_broker()
    assert isinstance(broker, PostgresBroker) and broker.url == postgres_url


BACKGROUND_TASKS = """
import time
from asyncflow import task

@task
def work(i: int, marker: str) -> int:
    with open(marker, "a") as f:
        f.write(f"{i}\\n")
    time.sleep(0.05)
    return i
"""


def test_three_workers_on_the_postgres_broker_with_a_sigkill_lose_no_run(postgres_url, tmp_path, monkeypatch):
    """Runs delayed here, three worker processes (each with a home of its own: other machines), one
    SIGKILLed mid-flight: every run completes once, and the PostgreSQL store holds each run's history."""
    from asyncflow import _settings
    from asyncflow._store.postgres import PostgresStore
    from asyncflow.testing import isolated_store

    (tmp_path / "bg_pg_app.py").write_text(BACKGROUND_TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ASYNCFLOW_STORE", postgres_url)
    monkeypatch.delenv("ASYNCFLOW_BROKER_URL", raising=False)
    monkeypatch.setenv("ASYNCFLOW_TASK_WORKER_LEASE_SECONDS", "1")
    _settings.reload()
    sys.modules.pop("bg_pg_app", None)
    import bg_pg_app

    marker = tmp_path / "marker.txt"
    store = PostgresStore(postgres_url)
    workers: list[subprocess.Popen[bytes]] = []

    def start_worker() -> subprocess.Popen[bytes]:
        home = tmp_path / f"machine-{len(workers)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
        env.update(ASYNCFLOW_HOME=str(home), ASYNCFLOW_STORE=postgres_url, ASYNCFLOW_TASK_WORKER_LEASE_SECONDS="1",
                   PYTHONPATH=str(tmp_path))
        log = open(tmp_path / f"worker-{len(workers)}.log", "wb")  # noqa: SIM115 - closed with the test
        proc = subprocess.Popen([sys.executable, "-m", "asyncflow.task_worker", "bg_pg_app:work", "--limit", "5"],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        workers.append(proc)
        return proc

    try:
        with isolated_store(store):
            futures = [bg_pg_app.work.delay(i, str(marker)) for i in range(150)]
            for _ in range(3):
                start_worker()
            deadline = time.monotonic() + 60
            while (not marker.exists() or len(marker.read_text().split()) < 20) and time.monotonic() < deadline:
                time.sleep(0.02)
            workers[0].send_signal(signal.SIGKILL)  # mid-flight: up to 5 runs in its hands
            workers[0].wait(10)
            assert [f.result(timeout=120) for f in futures] == list(range(150))
            for proc in workers[1:]:
                proc.send_signal(signal.SIGTERM)
            for proc in workers[1:]:
                proc.wait(30)
            reader = PostgresStore(postgres_url, create=False)
            try:
                runs = {run.id: run for run in reader.read_task_runs()}
                histories = {f.task_run_id: [s.name for s in reader.read_states(f.task_run_id)] for f in futures}
            finally:
                reader.close()
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        store.close()
        sys.modules.pop("bg_pg_app", None)
    done = marker.read_text().split()
    assert sorted(set(done)) == sorted(str(i) for i in range(150))  # every run ran (some twice: the killed ones)
    assert len(runs) == 150
    assert all(runs[f.task_run_id].state.name == "Completed" for f in futures), \
        {run.state.name for run in runs.values()}
    for history in histories.values():
        assert history[0] == "Scheduled" and history[-1] == "Completed" and "Running" in history
    assert not any((tmp_path / f"machine-{i}" / "asyncflow.db").exists() for i in range(3))


def test_a_worker_survives_a_database_restart_and_is_woken_again(tmp_path, monkeypatch):
    from pg_server import PostgresServer

    from asyncflow import _settings

    server = PostgresServer()  # a server of its own: this test restarts it
    proc = None
    try:
        url = server.create_database()
        (tmp_path / "bg_pg_restart.py").write_text(BACKGROUND_TASKS)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setenv("ASYNCFLOW_BROKER_URL", url)
        _settings.reload()
        sys.modules.pop("bg_pg_restart", None)
        import bg_pg_restart

        env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCFLOW_")}
        env.update(ASYNCFLOW_HOME=str(tmp_path / "worker-home"), ASYNCFLOW_BROKER_URL=url, PYTHONPATH=str(tmp_path))
        log = open(tmp_path / "worker.log", "w+")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, "-m", "asyncflow.task_worker", "bg_pg_restart:work"], cwd=tmp_path,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        marker = str(tmp_path / "marker.txt")
        assert bg_pg_restart.work.delay(1, marker).result(timeout=60) == 1
        server.kill()
        time.sleep(1.0)
        server.start()
        started = time.monotonic()
        assert bg_pg_restart.work.delay(2, marker).result(timeout=60) == 2
        assert time.monotonic() - started < 30
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.seek(0)
            output = log.read()
            log.close()
            assert "stopped after 2 run(s)" in output, output
        sys.modules.pop("bg_pg_restart", None)
        server.cleanup()
