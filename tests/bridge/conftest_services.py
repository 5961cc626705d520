"""Real services for integration tests: a redis-server, Celery workers and the al-loop web server.

Import the fixtures into a test module (``from tests.bridge.conftest_services import redis_server``).
Every process is started with the same command lines as docker-compose.yml
(``al-loop worker --queues default``, ``al-loop worker --queues train --pool solo``,
``al-loop serve``); ``tests/bridge/test_compose.py`` checks that they stay the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

# clients shared with the benchmarks (they live in the package, not in the tests)
from annotator_bridge.client import ApiClient, wait_until
from annotator_bridge.labelstudio.annotator import Annotator

# the al-loop command lines shared with docker-compose.yml and `al-loop up` (test_compose.py compares them)
from annotator_bridge.stack.processes import SERVE_ARGS, WORKER_DEFAULT_ARGS, WORKER_TRAIN_ARGS

__all__ = ["SERVE_ARGS", "WORKER_DEFAULT_ARGS", "WORKER_TRAIN_ARGS", "Annotator", "ApiClient", "wait_until"]

REPO = Path(__file__).resolve().parents[2]



def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def al_loop_command(*args: str) -> list[str]:
    """``al-loop <args>`` with the interpreter running the tests (no PATH lookup)."""
    return [sys.executable, "-m", "annotator_bridge.cli", *args]


class RedisServer:
    """``redis-server`` on a free loopback port, no persistence, in its own process group."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed: run the README install step "
                        "(apt-get install -y redis-server); the CI script installs it")
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        """URL of logical database ``db``: give each test environment its own, so workers of one
        environment never consume another's tasks (queue names are the same)."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_until(self.ping, 20, 0.02, "redis-server to answer PING")
        self.startup_seconds = time.monotonic() - t0
        return self

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


class ALProcess:
    """An ``al-loop`` subprocess (worker or server) with its own log file and process group."""

    def __init__(self, args: tuple[str, ...] | list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ALProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._fh = fh
        self.proc = subprocess.Popen(al_loop_command(*self.args), env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=str(REPO), start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        def seen() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.args} exited early:\n{self.log()[-3000:]}")
            return text in self.log()

        wait_until(seen, timeout, 0.1, f"{text!r} in {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker dies mid-task, nothing is acked)."""
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()
            self._fh = None


def start_worker(args: tuple[str, ...], env: Mapping[str, str], log_path: Path, timeout: float = 60) -> ALProcess:
    """Start ``al-loop worker ...`` and wait until Celery reports it is consuming."""
    worker = ALProcess(args, env, log_path).start()
    worker.wait_for_log("ready.", timeout)
    return worker


def start_server(env: Mapping[str, str], log_path: Path, port: int | None = None, timeout: float = 60) -> tuple[
        ALProcess, str]:
    """Start ``al-loop serve --port P`` and wait until ``/health`` answers; returns (process, base URL)."""
    port = port or free_port()
    server = ALProcess((*SERVE_ARGS, "--host", "127.0.0.1", "--port", str(port)), env, log_path).start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not server.alive():
            raise AssertionError(f"al-loop serve exited early:\n{server.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_until(up, timeout, 0.1, "al-loop serve /health")
    return server, url


TEST_API_TOKEN = "test-api-token-5d1f0c2e9a"
TEST_WEBHOOK_SECRET = "test-webhook-secret-7b3e91"


def al_loop_env(home: Path, broker_url: str, **extra: str) -> dict[str, str]:
    """Environment for al-loop processes: a temp home, its SQLite DB file, the broker and test secrets.

    ``al-loop serve`` and ``al-loop worker`` refuse to start without an API token and a webhook
    secret; ``extra`` replaces these test values.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AL_LOOP_", "LABEL_STUDIO_"))}
    env.update({
        "AL_LOOP_HOME": str(home),
        "AL_LOOP_DATABASE_URL": f"sqlite:///{home / 'al-loop.db'}",
        "AL_LOOP_BROKER_URL": broker_url,
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "AL_LOOP_API_TOKEN": TEST_API_TOKEN,
        "AL_LOOP_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
    })
    env.update(extra)
    return env


def prediction_scores(gateway: object, ls_project_id: int, model_version: str) -> dict[int, float]:
    """task id -> score of its ``model_version`` prediction, for unlabelled tasks (what Label Studio orders by)."""
    out: dict[int, float] = {}
    for t in gateway.list_tasks(ls_project_id, fields="all", page_size=500):  # type: ignore[attr-defined]
        if t.get("total_annotations") or t.get("annotations"):
            continue
        for p in t.get("predictions") or []:
            if p.get("model_version") == model_version:
                out[int(t["id"])] = float(p["score"])
    return out


def annotator_token(label_studio: object, gateway: object, email: str) -> str:
    """A Label Studio annotator's token (the server harness puts them in the admin's organization)."""
    token = label_studio.annotator_token(email)  # type: ignore[attr-defined]
    assert gateway.whoami(token=token).get("active_organization") is not None  # type: ignore[attr-defined]
    return str(token)
