"""The stack's child processes: start one in its own process group, check it, stop it, wait for it.

Also the ``al-loop`` command lines the stack runs (docker-compose.yml and the integration
tests use the same).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from al_loop.errors import AlLoopError

log = logging.getLogger("annotator_bridge.stack")

WORKER_DEFAULT_ARGS = ("worker", "--queues", "default")
WORKER_TRAIN_ARGS = ("worker", "--queues", "train", "--pool", "solo")
SERVE_ARGS = ("serve",)


class StackError(AlLoopError):
    """A service of the local stack could not be started; the message names its log file."""


def _pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def al_loop_argv(*args: str) -> list[str]:
    """``al-loop <args>`` run by this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "annotator_bridge.cli", *args]


class Child:
    """One child process of the stack, in its own process group, logging to ``log_path``."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        self.name, self.argv, self.env, self.log_path, self.cwd = name, argv, dict(env), log_path, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._fh: Any = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self._fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=str(self.cwd) if self.cwd else None,
                                     start_new_session=True, preexec_fn=_pdeathsig)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc is not None else None
            raise StackError(f"{self.name} exited (code {code}); log {self.log_path}:\n{log_tail(self.log_path)}")

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, grace)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc is not None:  # reap anything left in the group (e.g. prefork children)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, check: Callable[[], None] | None = None,
          interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (OSError, ValueError):
        return False
