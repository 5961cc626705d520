"""Run a local Label Studio server as a child process (tests and the local stack).

Label Studio is installed into its own virtualenv (default ``<repo>/.ls-venv``; see
``annotator_bridge.labelstudio.local`` for the install, the environment and free ports).
The server is driven through its CLI and plain HTTP; only ``annotator_token``
(``annotator_bridge.labelstudio.users``) uses the SDK (imported lazily).

Credentials and the empty-data snapshot
---------------------------------------
Label Studio creates the organization (with legacy tokens enabled) on the very first
start of a data dir, and a user with its token only when that email is new: an existing
user keeps its old token whatever is passed later. A fresh data dir also costs 20-34 s
of Django migrations on 2 cores. So the first clean start for a given
``(version, username, password, user_token)`` boots a throw-away server in a
temporary dir, stops it and keeps that freshly migrated, empty data dir as a
snapshot under ``<venv_dir>/empty-data-snapshot/<key>/``. Every later clean start
with the same credentials copies the snapshot (about 1.4 MB) and starts in ~3 s.
The snapshot holds no ``.env``, so each copy gets its own Django SECRET_KEY.
A data dir that already holds a database is started as is; ``start`` then checks with
``whoami`` that the token works for the username and raises LabelStudioServerError if not.

Defaults: user ``admin@example.com``, password ``al-loop-admin-pass``, legacy
token ``al-loop-local-admin-token-0123456789`` (loopback-only development
credentials; pass your own for anything else).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from al_loop.errors import ConfigError

from . import users
from .local import (
    DB_FILENAME,
    DEFAULT_PASSWORD,
    DEFAULT_USER_TOKEN,
    DEFAULT_USERNAME,
    LS_VERSION,
    SNAPSHOT_DIRNAME,
    LabelStudioInstall,
    LabelStudioServerError,
    file_lock,
    free_port,
    log_tail,
    port_is_free,
)

log = logging.getLogger(__name__)

_PORT_LINE = re.compile(r"Starting development server at https?://[^:/\s]+:(\d+)/")


class LabelStudioServer(LabelStudioInstall):
    """A Label Studio process on loopback, with a known admin user and legacy token.

    ``server = LabelStudioServer(); server.ensure_installed(); server.start(data_dir)``
    (install and environment: ``LabelStudioInstall``);
    then ``server.url`` / ``server.api_key`` feed ``LabelStudioGateway``; ``server.stop()``
    (or use it as a context manager). Ports are TCP ports on ``host``; times are seconds.
    """

    def __init__(self, venv_dir: str | Path | None = None, *, version: str = LS_VERSION,
                 python: str | None = None, extra_env: Mapping[str, str] | None = None,
                 webhook_timeout: float = 3.0) -> None:
        super().__init__(venv_dir, version=version, python=python, extra_env=extra_env,
                         webhook_timeout=webhook_timeout)
        self.port: int | None = None
        self.data_dir: Path | None = None
        self.log_path: Path | None = None
        self.username = DEFAULT_USERNAME
        self.password = DEFAULT_PASSWORD
        self.user_token = DEFAULT_USER_TOKEN
        self.startup_seconds: float | None = None
        self.used_snapshot = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: object | None = None

    # ------------------------------------------------------------------ properties
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8089`` (no trailing slash)."""
        if self.port is None:
            raise LabelStudioServerError("Label Studio is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The admin's legacy API token (``Authorization: Token <api_key>``)."""
        return self.user_token

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ snapshot
    def _snapshot_dir(self) -> Path:
        key = hashlib.sha256(json.dumps([self.version, self.username, self.password, self.user_token]).encode())
        return self.venv_dir / SNAPSHOT_DIRNAME / key.hexdigest()[:16]

    def _ensure_snapshot(self, timeout: float) -> Path:
        """Freshly migrated empty data dir for the current credentials, created once (~20-34 s)."""
        snap = self._snapshot_dir()
        if (snap / DB_FILENAME).exists():
            return snap
        snap.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(snap.parent / f".{snap.name}.lock"):
            if (snap / DB_FILENAME).exists():
                return snap
            tmp = Path(tempfile.mkdtemp(prefix=f".{snap.name}-", dir=snap.parent))
            boot = LabelStudioServer(self.venv_dir, version=self.version, python=self.python,
                                     extra_env=self.extra_env, webhook_timeout=self.webhook_timeout)
            try:
                boot._launch(tmp / "data", username=self.username, password=self.password,
                             user_token=self.user_token, timeout=timeout, log_path=tmp / "bootstrap.log")
                boot.stop()
                data = tmp / "data"
                (data / ".env").unlink(missing_ok=True)  # each copy generates its own SECRET_KEY
                (data / "label-studio.log").unlink(missing_ok=True)
                meta = {"version": self.version, "username": self.username, "created_at": time.time()}
                (data / "al-loop-snapshot.json").write_text(json.dumps(meta))
                os.replace(data, snap)
            finally:
                boot.stop()
                shutil.rmtree(tmp, ignore_errors=True)
        return snap

    # ------------------------------------------------------------------ start / stop
    def start(self, data_dir: str | Path, port: int | None = None, *, host: str = "127.0.0.1",
              username: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD,
              user_token: str = DEFAULT_USER_TOKEN, timeout: float = 180.0, use_snapshot: bool = True,
              log_path: str | Path | None = None) -> LabelStudioServer:
        """Start Label Studio on ``host:port`` with ``data_dir`` and wait until ``/health`` answers.

        ``port=None`` picks a free port. An empty/missing ``data_dir`` is filled from the
        empty-data snapshot for these credentials (created on first use) unless
        ``use_snapshot=False``. ``timeout`` bounds the wait for ``/health`` (building the
        snapshot, i.e. running the migrations, may take up to ``max(timeout, 300)`` s: 20-34 s
        on an idle 2-core machine, ~2 min under load). The log goes to ``log_path``
        (default ``<data_dir>/label-studio.log``).
        Raises LabelStudioServerError (with the log tail) when the server does not come up.
        """
        if self.running:
            raise LabelStudioServerError(f"Label Studio is already running at {self.url}")
        if "@" not in username:
            raise ConfigError(f"Label Studio username must be an email, got {username!r}")
        if len(user_token) <= 5:
            raise ConfigError("Label Studio user_token must be longer than 5 characters")
        self.ensure_installed()
        self.host, self.username, self.password, self.user_token = host, username, password, user_token
        data = Path(data_dir).resolve()
        t0 = time.monotonic()
        self.used_snapshot = False
        if use_snapshot and not (data / DB_FILENAME).exists():
            if data.exists() and any(data.iterdir()):
                raise LabelStudioServerError(f"{data} is not empty but holds no {DB_FILENAME}; "
                                             "refusing to overwrite it with a snapshot")
            snap = self._ensure_snapshot(max(timeout, 300.0))
            if data.exists():
                data.rmdir()
            shutil.copytree(snap, data)
            self.used_snapshot = True
        self._launch(data, port=port, username=username, password=password, user_token=user_token,
                     timeout=timeout, log_path=Path(log_path) if log_path else None)
        self.startup_seconds = time.monotonic() - t0
        log.info("Label Studio up at %s in %.1f s (snapshot: %s)", self.url, self.startup_seconds, self.used_snapshot)
        return self

    def _launch(self, data: Path, *, port: int | None = None, username: str, password: str, user_token: str,
                timeout: float, log_path: Path | None, attempts: int = 3) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.data_dir = data
        self.username, self.password, self.user_token = username, password, user_token
        self.log_path = log_path or data / "label-studio.log"
        last_error: LabelStudioServerError | None = None
        for _ in range(attempts if port is None else 1):
            chosen = port if port is not None else free_port(self.host)
            if not port_is_free(self.host, chosen):
                raise LabelStudioServerError(f"port {chosen} on {self.host} is busy")
            try:
                self._spawn_and_wait(chosen, timeout)
                return
            except _PortMoved as exc:  # someone took the port between our check and LS's bind
                last_error = LabelStudioServerError(str(exc))
                self.stop()
        assert last_error is not None
        raise last_error

    def _spawn_and_wait(self, port: int, timeout: float) -> None:
        assert self.data_dir is not None and self.log_path is not None
        cmd = [str(self.executable), "start", "--no-browser", "--data-dir", str(self.data_dir),
               "--internal-host", self.host, "--port", str(port), "--host", f"http://{self.host}:{port}",
               "--enable-legacy-api-token"]
        env = self._env(self.data_dir, port)
        # credentials go by environment, not argv (argv is visible to every local user in `ps`)
        env.update({"LABEL_STUDIO_USERNAME": self.username, "LABEL_STUDIO_PASSWORD": self.password,
                    "LABEL_STUDIO_USER_TOKEN": self.user_token})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fh = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self._log_fh = log_fh
        self._proc = subprocess.Popen(cmd, env=env, stdout=log_fh,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, cwd=str(self.data_dir))
        _LIVE.add(self)
        self.port = port
        deadline = time.monotonic() + timeout
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        while True:
            if self._proc.poll() is not None:
                raise LabelStudioServerError(
                    f"Label Studio exited with code {self._proc.returncode} during start-up; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}")
            actual = _announced_port(self.log_path, log_start)
            if actual is not None and actual != port:
                raise _PortMoved(f"Label Studio bound port {actual} instead of {port}")
            if actual == port and _health_ok(self.host, port):
                self._check_identity()
                return
            if time.monotonic() > deadline:
                self.stop()
                raise LabelStudioServerError(f"Label Studio did not answer /health on {self.host}:{port} within "
                                             f"{timeout:.0f} s; log {self.log_path}:\n{log_tail(self.log_path)}")
            time.sleep(0.2)

    def _check_identity(self) -> None:
        """The server on our port accepts our token as our user (catches stale data dirs)."""
        req = urllib.request.Request(f"{self.url}/api/current-user/whoami",
                                     headers={"Authorization": f"Token {self.user_token}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                email = json.loads(resp.read()).get("email")
        except urllib.error.HTTPError as exc:
            self.stop()
            raise LabelStudioServerError(
                f"Label Studio at {self.host}:{self.port} rejected the API token (HTTP {exc.code}); the data dir "
                f"{self.data_dir} was probably created with other credentials or without legacy tokens") from exc
        except (OSError, ValueError) as exc:
            self.stop()
            raise LabelStudioServerError(
                f"Label Studio at {self.host}:{self.port} did not answer whoami: {exc}") from exc
        if email != self.username:
            self.stop()
            raise LabelStudioServerError(f"the API token belongs to {email!r}, not {self.username!r}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL after ``timeout`` s. Idempotent.

        Servers still running at interpreter exit are stopped by an ``atexit`` hook; a
        parent killed by a signal leaves its server running (own session; see ``pid``).
        """
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        fh, self._log_fh = self._log_fh, None
        if fh is not None:
            fh.close()  # type: ignore[attr-defined]

    def __enter__(self) -> LabelStudioServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ users
    def run_cli(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``label-studio <args>`` against this data dir (same env); returns stdout+stderr."""
        if self.data_dir is None:
            raise LabelStudioServerError("Label Studio has no data dir yet (call start first)")
        res = subprocess.run([str(self.executable), *args, "--data-dir", str(self.data_dir)],
                             env=self._env(self.data_dir, self.port), capture_output=True, timeout=timeout,
                             cwd=str(self.data_dir), stdin=subprocess.DEVNULL)
        out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
        if res.returncode != 0:
            raise LabelStudioServerError(f"label-studio {' '.join(args)} failed ({res.returncode}):\n{out[-2000:]}")
        return out

    def user_token_of(self, email: str) -> str:
        """Legacy API token of an existing user, read with ``label-studio user --username`` (~3 s)."""
        return users.user_token_of(self, email)

    def annotator_token(self, email: str) -> str:
        """Create user ``email`` (if new) in the admin's organization and return their legacy API token."""
        return users.annotator_token(self, email)


def _announced_port(log_path: Path, offset: int) -> int | None:
    """The port Label Studio says (in its log, after ``offset``) it serves on; None before it says so."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    m = _PORT_LINE.search(text)
    return int(m.group(1)) if m else None


def _health_ok(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as resp:
            return resp.status == 200 and json.loads(resp.read() or b"{}").get("status") == "UP"
    except (OSError, ValueError):
        return False


class _PortMoved(LabelStudioServerError):
    pass


_LIVE: set[LabelStudioServer] = set()


@atexit.register
def _stop_all() -> None:  # never leave an orphaned server behind
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout=5)
