"""Fixtures for the Label Studio bridge tests.

``label_studio`` (session) starts ONE real Label Studio 1.23.2 on a free loopback port
with a data dir under pytest's tmp dir. The server venv persists in ``<repo>/.ls-venv``
(env ``AL_LOOP_LS_VENV`` overrides) and is installed on first use (~40-80 s); the first
start for the default credentials also builds the empty-data snapshot (~25-55 s), later
sessions start from the snapshot in ~3-6 s.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from annotator_bridge.labelstudio.gateway import LabelStudioGateway
from annotator_bridge.labelstudio.local import LabelStudioServerError
from annotator_bridge.labelstudio.server import LabelStudioServer


def _report(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def label_studio(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    venv = os.environ.get("AL_LOOP_LS_VENV")
    server = LabelStudioServer(Path(venv) if venv else None)
    t0 = time.monotonic()
    try:
        server.ensure_installed()
    except LabelStudioServerError as exc:
        pytest.fail(f"Label Studio cannot be installed here: {exc}")
    installed = time.monotonic() - t0
    data_dir = tmp_path_factory.mktemp("label-studio") / "data"
    server.start(data_dir)
    _report(request.config, f"\n[label_studio] {server.url} up in {server.startup_seconds:.1f} s "
                            f"(install check {installed:.1f} s, from snapshot: {server.used_snapshot}); "
                            f"log {server.log_path}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ls_gateway(label_studio: LabelStudioServer) -> Iterator[LabelStudioGateway]:
    with LabelStudioGateway(label_studio.url, label_studio.api_key, timeout=30, retries=2, backoff=0.2) as gw:
        yield gw


class Receiver:
    """A tiny HTTP endpoint on loopback: records POSTs; answers as an ML backend under ``/ml``."""

    def __init__(self, model_version: str = "v1") -> None:
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []
        self.model_version = model_version
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                receiver._record("GET", self.path, dict(self.headers), None)
                self._reply({"status": "UP", "model_class": "Test"} if self.path.endswith("/health") else {})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode(errors="replace")
                receiver._record("POST", self.path, dict(self.headers), body)
                if self.path.endswith("/setup"):
                    self._reply({"model_version": receiver.model_version})
                elif self.path.endswith("/predict"):
                    tasks = body.get("tasks", []) if isinstance(body, dict) else []
                    self._reply({"results": [{"result": [], "score": 0.5} for _ in tasks]})
                else:
                    self._reply({"ok": True})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _record(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        with self._cond:
            self.calls.append((method, path, headers, body))
            self._cond.notify_all()

    def posts(self, path: str, action: str | None = None) -> list[tuple[dict[str, str], Any]]:
        with self._cond:
            return [(h, b) for m, p, h, b in self.calls if m == "POST" and p == path
                    and (action is None or (isinstance(b, dict) and b.get("action") == action))]

    def wait_for(self, path: str, action: str, n: int = 1, timeout: float = 10.0) -> list[tuple[dict[str, str], Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.posts(path, action)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return self.posts(path, action)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()
