"""A local Label Studio install and what its process needs: venv, hermetic environment, free ports.

Label Studio is installed into its own virtualenv (default ``<repo>/.ls-venv``): it pins
Django, pydantic and the SDK, so it must not share the project's venv. Also the default
development credentials (loopback only; pass your own for anything else) and the errors
of the server harness (``annotator_bridge.labelstudio.server``).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from al_loop.errors import AlLoopError
from annotator_bridge.settings import process_environment

log = logging.getLogger("annotator_bridge.labelstudio.server")  # the harness's log lines keep their logger name

LS_VERSION = "1.23.2"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV_DIR = REPO_ROOT / ".ls-venv"
DEFAULT_USERNAME = "admin@example.com"
DEFAULT_PASSWORD = "al-loop-admin-pass"
DEFAULT_USER_TOKEN = "al-loop-local-admin-token-0123456789"
SNAPSHOT_DIRNAME = "empty-data-snapshot"
DB_FILENAME = "label_studio.sqlite3"

# Unprefixed names Label Studio's get_env() falls back to (gotcha 9) plus settings we own.
_UNSET_ENV = (
    "HOST", "PORT", "DEBUG", "USERNAME", "PASSWORD", "USER_TOKEN", "DATA_DIR", "BASE_DATA_DIR",
    "DJANGO_DB", "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "SENTRY_DSN", "FRONTEND_SENTRY_DSN",
    "COLLECT_ANALYTICS", "LATEST_VERSION_CHECK", "ENABLE_LEGACY_API_TOKEN", "SSRF_PROTECTION_ENABLED",
    "ML_BLOCK_LOCAL_IP", "WEBHOOK_TIMEOUT", "DISABLE_SIGNUP_WITHOUT_LINK", "LABEL_STUDIO_API_KEY",
)


class LabelStudioServerError(AlLoopError):
    """Label Studio could not be installed, started or queried; the message names the log file."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def log_tail(path: Path | None, n: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return ""
    return "\n".join(lines)


class LabelStudioInstall:
    """Label Studio ``version`` in the venv ``venv_dir`` (made with ``python``) and the environment of its processes.

    ``webhook_timeout`` (seconds) and ``extra_env`` go into that environment; ``host`` is the
    loopback address its processes serve on.
    """

    def __init__(self, venv_dir: str | Path | None = None, *, version: str = LS_VERSION,
                 python: str | None = None, extra_env: Mapping[str, str] | None = None,
                 webhook_timeout: float = 3.0) -> None:
        self.venv_dir = Path(venv_dir) if venv_dir is not None else DEFAULT_VENV_DIR
        self.version = version
        self.python = python or sys.executable
        self.extra_env = dict(extra_env or {})
        self.webhook_timeout = webhook_timeout
        self.host = "127.0.0.1"

    @property
    def executable(self) -> Path:
        return self.venv_dir / "bin" / "label-studio"

    def is_installed(self) -> bool:
        """True when the venv has the ``label-studio`` executable at ``self.version``."""
        if not self.executable.exists():
            return False
        pattern = str(self.venv_dir / "lib" / "python*" / "site-packages" / f"label_studio-{self.version}.dist-info")
        return bool(glob.glob(pattern))

    def ensure_installed(self, venv_dir: str | Path | None = None, *, timeout: float = 900.0) -> Path:
        """Create the server venv and ``pip install label-studio==<version>`` unless present (~40 s).

        Returns the ``label-studio`` executable. Safe to call from several processes (file lock).
        """
        if venv_dir is not None:
            self.venv_dir = Path(venv_dir)
        if self.is_installed():
            return self.executable
        with file_lock(self.venv_dir.parent / f".{self.venv_dir.name}.lock"):
            if self.is_installed():
                return self.executable
            t0 = time.monotonic()
            pip = self.venv_dir / "bin" / "pip"
            try:
                if not pip.exists():
                    subprocess.run([self.python, "-m", "venv", str(self.venv_dir)], check=True,
                                   capture_output=True, timeout=timeout)
                    subprocess.run([str(pip), "install", "-q", "--upgrade", "pip"], check=False,
                                   capture_output=True, timeout=timeout)
                subprocess.run([str(pip), "install", "-q", f"label-studio=={self.version}"], check=True,
                               capture_output=True, timeout=timeout)
            except subprocess.CalledProcessError as exc:
                err = (exc.stderr or b"").decode(errors="replace")[-2000:]
                raise LabelStudioServerError(f"installing label-studio=={self.version} into {self.venv_dir} "
                                             f"failed:\n{err}") from exc
            except subprocess.TimeoutExpired as exc:
                raise LabelStudioServerError(f"installing label-studio into {self.venv_dir} timed out") from exc
            if not self.is_installed():
                raise LabelStudioServerError(f"{self.executable} missing after installing label-studio")
            log.info("installed label-studio %s into %s in %.1f s", self.version, self.venv_dir,
                     time.monotonic() - t0)
        return self.executable

    def _env(self, data_dir: Path, port: int | None) -> dict[str, str]:
        """The environment of a Label Studio process: this process's, less every setting Label Studio reads,
        plus ours (no telemetry, legacy tokens, local ML backends and webhooks allowed), then ``extra_env``."""
        env = {k: v for k, v in process_environment().items()
               if k not in _UNSET_ENV and not k.startswith(("LABEL_STUDIO_", "HEARTEX_"))}
        env.update({
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_DEBUG": "false",
            "LABEL_STUDIO_SENTRY_DSN": "",
            "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
            "LABEL_STUDIO_WEBHOOK_TIMEOUT": str(self.webhook_timeout),
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "PYTHONUNBUFFERED": "1",
        })
        if port is not None:
            env["LABEL_STUDIO_HOST"] = f"http://{self.host}:{port}"
        env.update(self.extra_env)
        return env
