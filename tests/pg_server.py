"""A real PostgreSQL server for the tests: Debian's `postgresql` package (`initdb`, `pg_ctl`), a cluster in a
temporary directory, a free loopback port, run as an unprivileged user (PostgreSQL refuses to run as root:
when the tests run as root, the server runs as `nobody`). `.ci/run` installs the package; with
ASYNCFLOW_REQUIRE_POSTGRES set (CI), a missing server fails the tests instead of skipping them."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any

import pytest


def _binaries() -> str | None:
    """The directory of initdb/pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return os.path.dirname(found)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(candidates[-1]) if candidates else None


def unavailable(reason: str) -> None:
    if os.environ.get("ASYNCFLOW_REQUIRE_POSTGRES"):
        pytest.fail(f"{reason} (.ci/run installs Debian's postgresql package and psycopg)")
    pytest.skip(f"{reason}: apt-get install postgresql and pip install 'psycopg[binary]' (CI does)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One cluster: `start()`, `kill()` (SIGKILL, as a crash), `stop()`, `create_database()`."""

    def __init__(self, workdir: str | None = None, *, fsync: bool = False) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            unavailable("psycopg is not installed")
        bindir = _binaries()
        if bindir is None:
            unavailable("PostgreSQL is not installed (no initdb/pg_ctl)")
        self.bindir = bindir
        self.fsync = fsync
        self.workdir = workdir or tempfile.mkdtemp(prefix="asyncflow-pg-")
        self.data = os.path.join(self.workdir, "data")
        self.port = free_port()
        self.user = "asyncflow"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # postgres will not run as root: run it as nobody
            import pwd

            nobody = pwd.getpwnam("nobody")
            self._as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
            os.chown(self.workdir, nobody.pw_uid, nobody.pw_gid)
        os.chmod(self.workdir, 0o755)
        self._run("initdb", "-D", self.data, "-U", self.user, "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8",
                  "--no-sync")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([os.path.join(self.bindir, tool), *args], cwd=self.workdir, capture_output=True,
                                env={**os.environ, "LC_ALL": "C.UTF-8"}, **self._as)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout.decode()}{result.stderr.decode()}")

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = [f"-c port={self.port}", "-c listen_addresses=127.0.0.1",
                   f"-c unix_socket_directories={self.workdir}", "-c max_connections=200", "-c shared_buffers=32MB"]
        if not self.fsync:  # (synchronous_commit stays on: a killed server keeps what it committed)
            options += ["-c fsync=off", "-c full_page_writes=off"]
        log = open(os.path.join(self.workdir, "server.log"), "ab")  # noqa: SIM115 - the server's for its lifetime
        command = [os.path.join(self.bindir, "postgres"), "-D", self.data, *" ".join(options).split()]
        self.proc = subprocess.Popen(command,
                                     cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, **self._as)
        log.close()
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("PostgreSQL did not start: " + self.log()[-2000:]) from None
                time.sleep(0.05)

    def log(self) -> str:
        try:
            with open(os.path.join(self.workdir, "server.log"), errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the postmaster and its children (a crash): connections break at once."""
        if self.proc is None:
            return
        pid = self.proc.pid
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None
        # the postmaster's children notice its death and exit; wait until the port is free again
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True)
            except FileNotFoundError:  # no procps: give the children a moment
                time.sleep(0.5)
                break
            if not out.stdout.strip():
                break
            time.sleep(0.05)
        pid_file = os.path.join(self.data, "postmaster.pid")
        if os.path.exists(pid_file):
            os.unlink(pid_file)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # smart shutdown... then fast
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        try:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
