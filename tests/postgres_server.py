"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, started like ``redis-server``.

``PostgresServer`` runs ``initdb`` and ``postgres`` from ``/usr/lib/postgresql/<version>/bin`` (the newest
installed; ``AL_LOOP_PG_BIN`` names another folder) in a fresh temp folder, on a free loopback port, with no
Unix socket, trust authentication on loopback and durability off (``fsync``, ``synchronous_commit``: a test
server). PostgreSQL refuses to run as root: under root it runs as the ``postgres`` system user the Debian
package creates (``runuser``), and the temp folder belongs to that user. ``new_database()`` gives each test
its own database (``CREATE DATABASE``, a copy of the empty ``template1``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``postgres`` (or $AL_LOOP_PG_BIN)."""
    env = os.environ.get("AL_LOOP_PG_BIN")
    candidates = [Path(env)] if env else []
    if PG_ROOT.is_dir():
        versions = sorted((p for p in PG_ROOT.iterdir() if p.name.split(".")[0].isdigit()),
                          key=lambda p: tuple(int(x) for x in p.name.split(".") if x.isdigit()), reverse=True)
        candidates += [v / "bin" for v in versions]
    for c in candidates:
        if (c / "initdb").is_file() and (c / "postgres").is_file():
            return c
    return None


class PostgresServer:
    """``postgres`` on a free loopback port in its own temp folder and process group."""

    def __init__(self) -> None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            pytest.fail("PostgreSQL is not installed: run `bin/install --test` (apt-get install -y postgresql); "
                        "the server binaries are looked up under /usr/lib/postgresql/<version>/bin")
        self.bin = bin_dir
        self.port = _free_port()
        self.run_as: str | None = None
        if os.geteuid() == 0:  # postgres refuses root: run it as the package's system user
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root and there is no 'postgres' system user to run PostgreSQL as")
            self.run_as = "postgres"
        self.workdir = Path(tempfile.mkdtemp(prefix="al-loop-pg-"))
        self.data = self.workdir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0
        self._names = itertools.count()

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *args] if self.run_as else list(args)

    def start(self) -> PostgresServer:
        t0 = time.monotonic()
        if self.run_as:
            shutil.chown(self.workdir, self.run_as, self.run_as)
        subprocess.run(self._cmd(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                                 "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.workdir)
        log = self.workdir / "postgres.log"
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        if self.run_as:
            shutil.chown(log, self.run_as, self.run_as)
        self.proc = subprocess.Popen(
            self._cmd(str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                      "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                      "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                      "-c", "max_connections=200"),
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
            start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.ping():
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres exited early:\n{log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("postgres did not answer within 30 s")
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - t0
        return self

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL (psycopg 3) of ``database``."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database,
                               autocommit=True, connect_timeout=2)

    def ping(self) -> bool:
        try:
            with self._connect() as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:  # psycopg.OperationalError while it starts
            return False

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template1')
        return self.url(name)

    def drop_database(self, database_url: str) -> None:
        """Drop a database made by ``new_database`` (its open connections are ended: a test's store may hold some)."""
        name = database_url.rsplit("/", 1)[1]
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute(self, database_url: str, sql: str) -> None:
        """Run raw SQL (several statements) on a database of this server."""
        with self._connect(database_url.rsplit("/", 1)[1]) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)  # "fast" shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None
        shutil.rmtree(self.workdir, ignore_errors=True)
