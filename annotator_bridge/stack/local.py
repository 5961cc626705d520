"""The local stack behind ``al-loop up``: every service on this machine, on loopback, one command.

What ``LocalStack.start()`` runs, in order (each a child process in its own process group,
logging to ``<AL_LOOP_HOME>/logs/``):

1. **Broker.** ``redis-server`` when it is on PATH (a private instance on a free loopback port,
   append-only file under ``<home>/redis`` so queued tasks survive a restart). Without Redis it
   falls back to kombu's **filesystem broker** under ``<home>/broker``: the local stack is one
   machine, the web process and the workers share a disk, and the filesystem transport needs
   no server at all, so ``al-loop up`` works right after ``pip install``. Its limits (documented
   in deploy/README.md): polling (about 0.1 s latency) and no visibility-timeout redelivery of a
   task whose worker was killed, which the stack makes up for by re-dispatching unfinished
   rounds and pending pushes on every start (duplicate deliveries are no-ops).
2. **Label Studio** from its own venv (``.ls-venv``; installed on first run, about 40 s, plus
   one-time migrations about 30 s) via ``LabelStudioServer``, data in ``<home>/label-studio``.
3. **Celery workers**: ``al-loop worker --queues default`` and ``al-loop worker --queues train
   --pool solo`` (the same commands as docker-compose.yml).
4. **The web server**: ``al-loop serve`` = werkzeug's threaded server. For the local stack that
   is enough: requests are short (webhook acks enqueue ids, ``/setup`` answers from the DB),
   there is one annotator team on loopback, and it adds no dependency; compose runs gunicorn.
5. **The demo project** (unless ``demo=False``): see ``annotator_bridge.stack.demo``.

Then it prints the URLs and credentials and waits; Ctrl-C / SIGTERM stops everything in reverse
order (SIGTERM, SIGKILL after a grace period). Children also get SIGTERM if the stack process
itself dies (``PR_SET_PDEATHSIG`` on Linux).

Secrets (al-loop API token, webhook secret) are generated on the first start and kept in
``<home>/stack.json`` (mode 0600); environment variables win when set. File imports through the
API are open only for the demo files' folders (plus ``AL_LOOP_IMPORT_DIRS`` when set).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from annotator_bridge.labelstudio.local import (
    DEFAULT_PASSWORD,
    DEFAULT_USER_TOKEN,
    DEFAULT_USERNAME,
    free_port,
    port_is_free,
)
from annotator_bridge.settings import StackEnvironment

from .demo import DEMO_SAMPLE, DEMO_TEST_SAMPLE, StackApi, ensure_demo
from .processes import (
    SERVE_ARGS,
    WORKER_DEFAULT_ARGS,
    WORKER_TRAIN_ARGS,
    Child,
    StackError,
    al_loop_argv,
    http_ok,
    log_tail,
    wait_until,
)

READY_LINE = "al-loop is ready"
STATE_FILE = "stack.json"


@dataclass
class StackConfig:
    """Options of ``al-loop up``. Ports are TCP ports on ``host`` (loopback); 0 = pick a free one."""

    home: Path
    host: str = "127.0.0.1"
    api_port: int | None = None  # None: the port of the previous start, else 8000
    ls_port: int | None = None  # None: the port of the previous start, else 8080
    broker: str = "auto"  # "auto" | "redis" | "filesystem"
    demo: bool = True
    demo_file: Path = DEMO_SAMPLE
    demo_test_file: Path | None = DEMO_TEST_SAMPLE
    demo_round0: bool = True
    ls_venv: Path | None = None
    startup_timeout: float = 600.0
    extra_env: dict[str, str] = field(default_factory=dict)
    environment: StackEnvironment = field(default_factory=StackEnvironment.from_env)
    """What the environment of ``al-loop up`` overrides (read by ``annotator_bridge.settings``)."""


class LocalStack:
    """Starts, reports and stops the local stack (see the module docstring)."""

    def __init__(self, config: StackConfig, out: TextIO | None = None) -> None:
        self.config = config
        self.home = config.home.resolve()
        self.out = out or sys.stdout
        self.children: list[Child] = []
        self.redis: Child | None = None
        self.label_studio: Any = None
        self.env: dict[str, str] = {}
        self.api_url = ""
        self.ls_url = ""
        self.broker_url = ""
        self.demo_project: dict[str, Any] | None = None
        self.state: dict[str, Any] = {}
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ state / settings
    def _load_state(self) -> dict[str, Any]:
        path = self.home / STATE_FILE
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        path = self.home / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def _secret(self, env_name: str, key: str, prefix: str) -> str:
        value = self.config.environment.overrides.get(env_name) or self.state.get(key)
        if not value:
            value = f"{prefix}-{secrets.token_hex(16)}"
        self.state[key] = value
        return str(value)

    def _port(self, wanted: int | None, key: str, default: int, what: str) -> int:
        """``wanted``, else the port this home used last time (so Label Studio's ML-backend URL stays
        valid across restarts), else ``default``; a free port when that one is busy (0 = any)."""
        host = self.config.host
        if wanted is None:
            wanted = int(self.state.get(key) or default)
        if wanted and port_is_free(host, wanted):
            port = wanted
        else:
            port = free_port(host)
            if wanted:
                self._say(f"  port {wanted} is busy; {what} uses {port}")
        self.state[key] = port
        return port

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    # ------------------------------------------------------------------ start
    def start(self) -> LocalStack:
        """Start every service and the demo project; on failure stop what started and raise."""
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.state = self._load_state()
        try:
            self._start_broker()
            self._start_label_studio()
            self._build_env()
            self._start_workers()
            self._start_web()
            recover_unfinished(self.env, self._say)
            if self.config.demo:
                self._ensure_demo()
            self._save_state()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start_broker(self) -> None:
        choice = self.config.broker
        exe = shutil.which("redis-server")
        if choice == "redis" and exe is None:
            raise StackError("--broker redis: redis-server is not installed (apt-get install -y redis-server)")
        if choice == "filesystem" or exe is None:
            self.broker_url = "filesystem://"
            self._say("broker: filesystem queue under " + str(self.home / "broker") +
                      ("" if exe else " (redis-server not found on PATH)"))
            return
        port = free_port(self.config.host)
        data = self.home / "redis"
        data.mkdir(exist_ok=True)
        self.redis = Child("redis-server", [exe, "--port", str(port), "--bind", self.config.host, "--save", "",
                                            "--appendonly", "yes", "--dir", str(data)],
                           self.config.environment.base, self.home / "logs" / "redis.log").start()
        self.children.append(self.redis)
        self.broker_url = f"redis://{self.config.host}:{port}/0"

        def pong() -> bool:
            try:
                with socket.create_connection((self.config.host, port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(pong, 30, "redis-server", self.redis.check, 0.05)
        self._say(f"broker: redis-server on {self.broker_url}")

    def _start_label_studio(self) -> None:
        from annotator_bridge.labelstudio.server import LabelStudioServer

        server = LabelStudioServer(self.config.ls_venv)
        if not server.is_installed():
            self._say(f"label studio: installing into {server.venv_dir} (first run only, about a minute) ...")
        server.ensure_installed()
        data = self.home / "label-studio"
        if not (data / "label_studio.sqlite3").exists():
            self._say("label studio: creating its database (first run only, up to a minute) ...")
        port = self._port(self.config.ls_port, "ls_port", 8080, "Label Studio")
        self.state.setdefault("ls_username", self.config.environment.ls_username or DEFAULT_USERNAME)
        self.state.setdefault("ls_password", DEFAULT_PASSWORD)
        self.state.setdefault("ls_token", self.config.environment.ls_api_key or DEFAULT_USER_TOKEN)
        server.start(data, port, host=self.config.host, username=self.state["ls_username"],
                     password=self.state["ls_password"], user_token=self.state["ls_token"],
                     timeout=self.config.startup_timeout, log_path=self.home / "logs" / "label-studio.log")
        self.label_studio = server
        self.ls_url = server.url
        self._say(f"label studio: {self.ls_url} (up in {server.startup_seconds:.1f} s)")

    def _build_env(self) -> None:
        api_port = self._port(self.config.api_port, "api_port", 8000, "the al-loop server")
        self.api_url = f"http://{self.config.host}:{api_port}"
        self._api_port = api_port
        given = self.config.environment.overrides
        env = dict(self.config.environment.base)
        env.update({
            "AL_LOOP_HOME": str(self.home),
            "AL_LOOP_DATABASE_URL": given.get("AL_LOOP_DATABASE_URL") or f"sqlite:///{self.home / 'al-loop.db'}",
            "AL_LOOP_BROKER_URL": self.broker_url,
            "AL_LOOP_ARTIFACTS_DIR": given.get("AL_LOOP_ARTIFACTS_DIR") or str(self.home / "artifacts"),
            "AL_LOOP_API_TOKEN": self._secret("AL_LOOP_API_TOKEN", "api_token", "al-loop"),
            "AL_LOOP_WEBHOOK_SECRET": self._secret("AL_LOOP_WEBHOOK_SECRET", "webhook_secret", "whsec"),
            "AL_LOOP_PUBLIC_URL": self.api_url,
            "LABEL_STUDIO_URL": self.ls_url,
            "LABEL_STUDIO_API_KEY": self.state["ls_token"],
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
        })
        for name in ("AL_LOOP_VISIBILITY_TIMEOUT", "AL_LOOP_TRAIN_QUEUE", "AL_LOOP_MAX_IMPORT_MB"):
            if given.get(name):
                env[name] = given[name]
        env["AL_LOOP_IMPORT_DIRS"] = self._import_dirs(given.get("AL_LOOP_IMPORT_DIRS"))
        env.update(self.config.extra_env)
        self.env = env
        self._save_state()

    def _import_dirs(self, given: str | None) -> str:
        """``AL_LOOP_IMPORT_DIRS`` of the stack: the folders a user gave plus the demo files' folders."""
        dirs = [d for d in (given or "").split(os.pathsep) if d.strip()]
        if self.config.demo:
            for f in (self.config.demo_file, self.config.demo_test_file):
                if f is not None:
                    dirs.append(str(f.expanduser().resolve().parent))
        return os.pathsep.join(dict.fromkeys(dirs))

    def _start_workers(self) -> None:
        logs = self.home / "logs"
        for name, args in (("worker-default", WORKER_DEFAULT_ARGS), ("worker-train", WORKER_TRAIN_ARGS)):
            child = Child(name, al_loop_argv(*args), self.env, logs / f"{name}.log", cwd=self.home).start()
            self.children.append(child)
        for child in self.children[-2:]:
            wait_until(lambda c=child: "ready." in log_tail(c.log_path, 200), 120, f"{child.name} to be ready",  # type: ignore[misc]
                  child.check)
        self._say("workers: default (threads) and train (solo pool) ready")

    def _start_web(self) -> None:
        argv = al_loop_argv(*SERVE_ARGS, "--host", self.config.host, "--port", str(self._api_port))
        child = Child("al-loop serve", argv, self.env, self.home / "logs" / "serve.log", cwd=self.home).start()
        self.children.append(child)
        self.web = child
        wait_until(lambda: http_ok(f"{self.api_url}/health"), 120, "al-loop serve /health", child.check)
        self._say(f"al-loop: {self.api_url}")

    def _ensure_demo(self) -> None:
        """Create (or find) the demo NER project through the HTTP API and wait for round-0 predictions."""
        api = StackApi(self.api_url, self.env["AL_LOOP_API_TOKEN"])
        self.demo_project = ensure_demo(api, self.config.demo_file, self.config.demo_test_file,
                                        self.config.demo_round0, say=self._say, check=self._check_children)
        self.state["demo_project_id"] = self.demo_project["id"]

    def _check_children(self) -> None:
        for child in self.children:
            child.check()

    # ------------------------------------------------------------------ report / run / stop
    def banner(self) -> str:
        lines = [
            "",
            "=" * 72,
            f"Label Studio   {self.ls_url}",
            f"  username     {self.state.get('ls_username')}",
            f"  password     {self.state.get('ls_password')}",
            f"  API key      {self.state.get('ls_token')}",
            f"al-loop API    {self.api_url}/api/projects",
            f"  dashboard    {self.api_url}/dashboard/",
            f"  ML backend   {self.api_url} (health {self.api_url}/health)",
            f"  API token    {self.env.get('AL_LOOP_API_TOKEN')}   (Authorization: Bearer <token>)",
            f"broker         {self.broker_url}",
            f"home           {self.home} (database, artifacts, logs/)",
        ]
        if self.demo_project:
            p = self.demo_project
            lines.append(f"demo project   {p.get('name')}: {self.ls_url}/projects/{p.get('ls_project_id')}/data")
        lines += ["=" * 72, f"{READY_LINE}. Press Ctrl-C to stop.", ""]
        return "\n".join(lines)

    def wait(self) -> int:
        """Block until a signal (returns 0) or a child dies (returns 1)."""
        while not self._stopping.is_set():
            for child in self.children:
                if not child.alive():
                    self._say(f"{child.name} stopped unexpectedly; log {child.log_path}:\n{log_tail(child.log_path)}")
                    return 1
            if self.label_studio is not None and not self.label_studio.running:
                self._say(f"Label Studio stopped unexpectedly; log {self.label_studio.log_path}")
                return 1
            self._stopping.wait(1.0)
        return 0

    def request_stop(self, *_: Any) -> None:
        self._stopping.set()

    def stop(self) -> None:
        """Stop every child in reverse start order (web, workers, Label Studio, Redis)."""
        self._stopping.set()
        for child in reversed([c for c in self.children if c is not self.redis]):
            child.stop(grace=30 if child.name == "worker-train" else 15)
        if self.label_studio is not None:
            with contextlib.suppress(Exception):
                self.label_studio.stop()
        if self.redis is not None:
            self.redis.stop()
        self.children.clear()


def run(config: StackConfig, out: TextIO | None = None) -> int:
    """``al-loop up``: start, print, wait for Ctrl-C / SIGTERM, stop. Returns the exit code."""
    stack = LocalStack(config, out)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, _frame: Any) -> None:
        stack.request_stop()
        raise KeyboardInterrupt

    for sig in previous:
        signal.signal(sig, on_signal)
    code = 0
    try:
        stack.start()
        print(stack.banner(), file=stack.out, flush=True)
        for sig in previous:  # from now on a signal only asks wait() to return
            signal.signal(sig, stack.request_stop)
        code = stack.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        print("stopping ...", file=stack.out, flush=True)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopped.", file=stack.out, flush=True)
    return code


def recover_unfinished(env: Mapping[str, str], say: Callable[[str], None]) -> None:
    """Re-dispatch unfinished rounds and pending pushes (duplicates are no-ops)."""
    from al_loop.store import Store
    from annotator_bridge.settings import Settings
    from annotator_bridge.worker.celery_app import make_celery
    from annotator_bridge.worker.dispatcher import CeleryDispatcher

    settings = Settings.from_env(env)
    store = Store(settings.database_url)
    dispatcher = CeleryDispatcher(make_celery(settings))
    try:
        for project in store.list_projects():
            active = store.active_round(project.id)
            if active is not None:
                dispatcher.run_round(project.id, active.id)
                say(f"  project {project.id}: round {active.index} was unfinished; queued again")
            last = store.last_succeeded_round(project.id)
            if last is not None and last.push_status.is_outstanding:
                dispatcher.push_round(last.id)
                say(f"  project {project.id}: round {last.index} predictions not in Label Studio; "
                    "push queued again")
    finally:
        dispatcher.close()
        store.dispose()
