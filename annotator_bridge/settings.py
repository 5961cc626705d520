"""Process settings: the ONLY place in al-loop that reads the environment.

Every process (web server, Celery worker, CLI) builds one frozen ``Settings`` with
``Settings.from_env()`` and passes it (or values taken from it) to the objects it creates.
The core (``al_loop``) never reads the environment.

Environment variables (same names in the local stack, docker compose and ``deploy/.env.example``):

======================== ==================================================================
``AL_LOOP_HOME``          state folder: SQLite db, artifacts, logs, broker (default ``./.al-loop``)
``AL_LOOP_DATABASE_URL``  SQLAlchemy URL (default ``sqlite:///$AL_LOOP_HOME/al-loop.db``); PostgreSQL:
                          ``postgresql+psycopg://user:password@host:5432/db`` (``postgresql://`` is taken
                          as psycopg 3, the ``postgres`` extra); the schema is upgraded on open
``AL_LOOP_BROKER_URL``    Celery broker, e.g. ``redis://127.0.0.1:6379/0``; unset = the
                          ``filesystem://`` transport under ``$AL_LOOP_HOME/broker``
``AL_LOOP_ARTIFACTS_DIR`` model artifacts (default ``$AL_LOOP_HOME/artifacts``)
``AL_LOOP_API_TOKEN``     bearer token of the management API ``/api/...`` (unset = API refused)
``AL_LOOP_DASHBOARD_TOKEN`` set = ``/dashboard/...`` and ``/metrics`` need this token (or the
                          API token); unset = both open (meant for loopback)
``AL_LOOP_WEBHOOK_SECRET`` shared secret Label Studio sends in the ``X-AL-Loop-Secret`` header
``AL_LOOP_PUBLIC_URL``    how Label Studio reaches this server (ML backend URL; its webhook is
                          ``<url>/webhook``)
``LABEL_STUDIO_URL``      Label Studio base URL, e.g. ``http://127.0.0.1:8080``
``LABEL_STUDIO_API_KEY``  legacy token or personal access token
``AL_LOOP_VISIBILITY_TIMEOUT`` Redis visibility timeout in seconds (default 7200; > longest round)
``AL_LOOP_TRAIN_QUEUE``   Celery queue of training rounds (default ``train``)
``AL_LOOP_MAX_REQUEST_MB`` largest accepted request body in MiB (default 64; larger = HTTP 413)
``AL_LOOP_IMPORT_DIRS``   server folders the items API may read files from (``os.pathsep``
                          separated); unset = file imports refused (send the items in the body)
``AL_LOOP_MAX_IMPORT_MB`` largest file the items API reads from those folders, MiB (default 256)
``AL_LOOP_LOG_LEVEL``     ``DEBUG`` | ``INFO`` | ``WARNING`` | ``ERROR`` (default ``INFO``)
``AL_LOOP_TRAIN_CPU_PRIORITY``
                         ``nice`` | ``idle`` | ``normal``: how the training worker yields
                          the CPU (default ``nice``)
======================== ==================================================================

Empty values count as unset. Secrets (API token, webhook secret, Label Studio key) never
appear in ``repr`` or ``to_dict()``. ``al-loop serve`` and ``al-loop worker`` refuse to start
(``Settings.require_secrets``) without an API token and a webhook secret, or with a placeholder
(``change-me...``) in any secret; ``al-loop up`` generates its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from al_loop.errors import ConfigError

DEFAULT_HOME = ".al-loop"
DEFAULT_VISIBILITY_TIMEOUT = 7200
DEFAULT_TRAIN_QUEUE = "train"
DEFAULT_MAX_REQUEST_MB = 64
DEFAULT_MAX_IMPORT_MB = 256
FILESYSTEM_BROKER = "filesystem://"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
WEBHOOK_SECRET_HEADER = "X-AL-Loop-Secret"

ENV_NAMES: dict[str, str] = {
    "home": "AL_LOOP_HOME",
    "database_url": "AL_LOOP_DATABASE_URL",
    "broker_url": "AL_LOOP_BROKER_URL",
    "artifacts_dir": "AL_LOOP_ARTIFACTS_DIR",
    "api_token": "AL_LOOP_API_TOKEN",
    "dashboard_token": "AL_LOOP_DASHBOARD_TOKEN",
    "webhook_secret": "AL_LOOP_WEBHOOK_SECRET",
    "public_url": "AL_LOOP_PUBLIC_URL",
    "label_studio_url": "LABEL_STUDIO_URL",
    "label_studio_api_key": "LABEL_STUDIO_API_KEY",
    "visibility_timeout": "AL_LOOP_VISIBILITY_TIMEOUT",
    "train_queue": "AL_LOOP_TRAIN_QUEUE",
    "max_request_bytes": "AL_LOOP_MAX_REQUEST_MB",
    "import_dirs": "AL_LOOP_IMPORT_DIRS",
    "max_import_bytes": "AL_LOOP_MAX_IMPORT_MB",
    "log_level": "AL_LOOP_LOG_LEVEL",
    "train_cpu_priority": "AL_LOOP_TRAIN_CPU_PRIORITY",
}
"""Settings field -> environment variable."""

TRAIN_CPU_PRIORITIES = ("nice", "idle", "normal")
"""How a train-queue worker yields the CPU: ``nice`` (niceness 10, the default), ``idle`` (Linux SCHED_IDLE:
it runs only on otherwise idle CPU time) or ``normal`` (unchanged)."""
SECRET_FIELDS = frozenset({"api_token", "dashboard_token", "webhook_secret", "label_studio_api_key"})
_QUEUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
_PLACEHOLDER_RE = re.compile(r"change[-_ .]?me|placeholder|replace[-_ .]?me", re.IGNORECASE)
# pseudo-file systems: never imported from, whatever AL_LOOP_IMPORT_DIRS says
PSEUDO_FILE_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _http_url(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL like http://127.0.0.1:8080, got {value!r}")
    return value.rstrip("/")


@dataclass(frozen=True)
class Settings:
    """Validated process settings (see the module docstring for the environment names).

    Paths are absolute. ``broker_url`` is ``"filesystem://"`` when no broker was given; the
    worker then uses ``broker_dir`` for the transport's folders.
    """

    home: Path
    database_url: str
    broker_url: str
    artifacts_dir: Path
    api_token: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    public_url: str | None = None
    label_studio_url: str | None = None
    label_studio_api_key: str | None = field(default=None, repr=False)
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
    train_queue: str = DEFAULT_TRAIN_QUEUE
    max_request_bytes: int = DEFAULT_MAX_REQUEST_MB * 1024 * 1024
    import_dirs: tuple[Path, ...] = ()
    max_import_bytes: int = DEFAULT_MAX_IMPORT_MB * 1024 * 1024
    log_level: str = "INFO"
    dashboard_token: str | None = field(default=None, repr=False)
    train_cpu_priority: str = "nice"

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser().absolute())
        object.__setattr__(self, "artifacts_dir", Path(self.artifacts_dir).expanduser().absolute())
        object.__setattr__(self, "import_dirs", tuple(Path(p).expanduser().absolute() for p in self.import_dirs))
        if "://" not in self.database_url:
            raise ConfigError(f"AL_LOOP_DATABASE_URL must be a SQLAlchemy URL like sqlite:///path/al-loop.db, "
                              f"got {self.database_url!r}")
        if "://" not in self.broker_url:
            raise ConfigError(f"AL_LOOP_BROKER_URL must be a broker URL like redis://127.0.0.1:6379/0, "
                              f"got {self.broker_url!r}")
        object.__setattr__(self, "public_url", _http_url("AL_LOOP_PUBLIC_URL", self.public_url))
        object.__setattr__(self, "label_studio_url", _http_url("LABEL_STUDIO_URL", self.label_studio_url))
        if bool(self.label_studio_url) != bool(self.label_studio_api_key):
            missing = "LABEL_STUDIO_API_KEY" if self.label_studio_url else "LABEL_STUDIO_URL"
            raise ConfigError(f"Label Studio needs both LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY; {missing} is "
                              "not set")
        if isinstance(self.visibility_timeout, bool) or not isinstance(self.visibility_timeout, int) \
                or self.visibility_timeout < 60:
            raise ConfigError(f"AL_LOOP_VISIBILITY_TIMEOUT must be a whole number of seconds >= 60 (longer than the "
                              f"longest round), got {self.visibility_timeout!r}")
        if not isinstance(self.train_queue, str) or not _QUEUE_RE.match(self.train_queue):
            raise ConfigError(f"AL_LOOP_TRAIN_QUEUE must be a queue name (letters, digits, _ . -), "
                              f"got {self.train_queue!r}")
        if self.train_queue == "default":
            raise ConfigError("AL_LOOP_TRAIN_QUEUE must differ from the 'default' queue (ingest and pushes)")
        if isinstance(self.max_request_bytes, bool) or not isinstance(self.max_request_bytes, int) \
                or self.max_request_bytes < 1024:
            raise ConfigError(f"AL_LOOP_MAX_REQUEST_MB must be >= 1 (the request size limit is "
                              f"{self.max_request_bytes!r} bytes)")
        if isinstance(self.max_import_bytes, bool) or not isinstance(self.max_import_bytes, int) \
                or self.max_import_bytes < 1024:
            raise ConfigError(f"AL_LOOP_MAX_IMPORT_MB must be >= 1 (the import size limit is "
                              f"{self.max_import_bytes!r} bytes)")
        level = str(self.log_level).upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"AL_LOOP_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        object.__setattr__(self, "log_level", level)
        priority = str(self.train_cpu_priority).strip().lower()
        if priority not in TRAIN_CPU_PRIORITIES:
            raise ConfigError(f"AL_LOOP_TRAIN_CPU_PRIORITY must be one of {', '.join(TRAIN_CPU_PRIORITIES)}, "
                              f"got {self.train_cpu_priority!r}")
        object.__setattr__(self, "train_cpu_priority", priority)
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            if value is not None and (not value.strip() or value != value.strip()):
                raise ConfigError(f"{ENV_NAMES[name]} must not be blank or carry surrounding spaces")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); ConfigError names the bad variable."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_NAMES[name])
            if value is None:
                return None
            value = value.strip()
            return value or None

        home = Path(get("home") or DEFAULT_HOME).expanduser().absolute()
        database_url = get("database_url") or f"sqlite:///{home / 'al-loop.db'}"
        broker_url = get("broker_url") or FILESYSTEM_BROKER
        artifacts_dir = Path(get("artifacts_dir") or home / "artifacts")
        raw_dirs = get("import_dirs")
        import_dirs = tuple(Path(p) for p in raw_dirs.split(os.pathsep) if p.strip()) if raw_dirs else ()
        return cls(
            home=home,
            database_url=database_url,
            broker_url=broker_url,
            artifacts_dir=artifacts_dir,
            api_token=get("api_token"),
            webhook_secret=get("webhook_secret"),
            public_url=get("public_url"),
            label_studio_url=get("label_studio_url"),
            label_studio_api_key=get("label_studio_api_key"),
            visibility_timeout=_int(get("visibility_timeout"), "visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT),
            train_queue=get("train_queue") or DEFAULT_TRAIN_QUEUE,
            max_request_bytes=_int(get("max_request_bytes"), "max_request_bytes", DEFAULT_MAX_REQUEST_MB) * 1024 * 1024,
            import_dirs=import_dirs,
            max_import_bytes=_int(get("max_import_bytes"), "max_import_bytes", DEFAULT_MAX_IMPORT_MB) * 1024 * 1024,
            log_level=get("log_level") or "INFO",
            dashboard_token=get("dashboard_token"),
            train_cpu_priority=get("train_cpu_priority") or "nice",
        )

    # ------------------------------------------------------------------ derived values
    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def broker_dir(self) -> Path:
        """Folder of the ``filesystem://`` broker transport (used only when ``uses_filesystem_broker``)."""
        return self.home / "broker"

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.broker_url.startswith("filesystem:")

    @property
    def label_studio_configured(self) -> bool:
        return bool(self.label_studio_url and self.label_studio_api_key)

    @property
    def sqlite_path(self) -> Path | None:
        """The database file for ``sqlite:///...`` URLs (None for in-memory or other databases)."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and self.database_url not in (prefix, prefix + ":memory:"):
            return Path(self.database_url[len(prefix):])
        return None

    def ensure_dirs(self) -> None:
        """Create the state folders (home, artifacts, logs, the SQLite folder, the filesystem broker's)."""
        dirs = [self.home, self.artifacts_dir, self.logs_dir]
        if self.sqlite_path is not None:
            dirs.append(self.sqlite_path.parent)
        if self.uses_filesystem_broker:
            dirs += [self.broker_dir / "in", self.broker_dir / "processed"]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)

    def allows_import_path(self, path: str | Path) -> bool:
        """Whether the items API may read ``path`` (never when ``AL_LOOP_IMPORT_DIRS`` is unset)."""
        try:
            self.resolve_import_path(path)
        except ConfigError:
            return False
        return True

    def resolve_import_path(self, path: str | Path) -> Path:
        """The one path the items API reads for ``path``: ``~`` expanded, symlinks and ``..`` resolved.

        ConfigError when file imports are off (``AL_LOOP_IMPORT_DIRS`` unset), for a NUL in the
        path, and for a resolved path outside those folders or on a pseudo-file system (/proc,
        /sys, /dev). The caller opens exactly the returned path.
        """
        raw = str(path)
        if "\x00" in raw:
            raise ConfigError("the import path contains a NUL character")
        if not self.import_dirs:
            raise ConfigError("importing files from the server is off: set AL_LOOP_IMPORT_DIRS to the folders the "
                              "server may read, or send the items in the request body")
        try:
            resolved = Path(raw).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            raise ConfigError(f"cannot resolve the import path {raw!r}") from None
        if any(resolved.is_relative_to(root) for root in PSEUDO_FILE_ROOTS):
            raise ConfigError(f"{raw!r} is on /proc, /sys or /dev, outside the folders the server may import from "
                              "(AL_LOOP_IMPORT_DIRS)")
        if not any(resolved.is_relative_to(d.resolve()) for d in self.import_dirs):
            raise ConfigError(f"{raw!r} is outside the folders the server may import from (AL_LOOP_IMPORT_DIRS)")
        return resolved

    def secret_problems(self) -> list[str]:
        """What makes these settings unfit for a server: a missing API token or webhook secret, a placeholder."""
        problems = [f"{ENV_NAMES[name]} is not set" for name in ("api_token", "webhook_secret")
                    if not getattr(self, name)]
        problems += [f"{ENV_NAMES[name]} is a placeholder" for name in sorted(SECRET_FIELDS)
                     if _PLACEHOLDER_RE.search(getattr(self, name) or "")]
        if _PLACEHOLDER_RE.search(urlsplit(self.database_url).password or ""):
            problems.append("the password in AL_LOOP_DATABASE_URL is a placeholder")
        return problems

    def require_secrets(self, process: str) -> None:
        """ConfigError naming every problem of ``secret_problems`` (``al-loop serve`` and the workers call it)."""
        problems = self.secret_problems()
        if problems:
            raise ConfigError(f"{process} refuses to start: {'; '.join(problems)}. Generate secrets with "
                              "python -c \"import secrets; print(secrets.token_urlsafe(32))\" (al-loop up makes "
                              "its own)")

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe view for logs and status pages: secrets reported only as set / not set."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                out[f.name] = "set" if value else None
            elif isinstance(value, Path):
                out[f.name] = str(value)
            elif isinstance(value, tuple):
                out[f.name] = [str(v) for v in value]
            else:
                out[f.name] = value
        out["database_url"] = _redact_url(self.database_url)
        out["broker_url"] = _redact_url(self.broker_url)
        return out


def _int(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_NAMES[name]} must be a whole number, got {raw!r}") from None


def _redact_url(url: str) -> str:
    """Hide a password in ``scheme://user:password@host/...``."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return url


# ------------------------------------------------------------------ the local stack and child processes
def process_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of this process's environment (default ``os.environ``), for the children it starts.

    ``al-loop up`` and the Label Studio harness start processes (Redis, Label Studio, workers,
    the server) that inherit the environment with some variables replaced; they take it from here.
    """
    return dict(os.environ if environ is None else environ)


@dataclass(frozen=True)
class StackEnvironment:
    """What ``al-loop up`` takes from its environment: values that override its own choices.

    ``base`` is the environment its children inherit (every ``AL_LOOP_*`` and ``LABEL_STUDIO_*``
    variable removed except ``AL_LOOP_SHARED_DATA``: the stack sets those itself). ``overrides``
    are the al-loop variables a user set to replace the stack's defaults (database, artifacts,
    secrets, visibility timeout, train queue, import size; import folders are added to the
    demo's); ``ls_username`` / ``ls_api_key`` replace the Label Studio account's defaults.
    """

    home: Path | None = None
    base: dict[str, str] = field(default_factory=dict, repr=False)
    overrides: dict[str, str] = field(default_factory=dict, repr=False)
    ls_username: str | None = None
    ls_api_key: str | None = field(default=None, repr=False)

    OVERRIDABLE = ("database_url", "artifacts_dir", "api_token", "dashboard_token", "webhook_secret",
                   "visibility_timeout", "train_queue", "import_dirs", "max_import_bytes")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackEnvironment:
        env = process_environment(environ)
        base = {k: v for k, v in env.items()
                if not k.startswith(("AL_LOOP_", "LABEL_STUDIO_")) or k == "AL_LOOP_SHARED_DATA"}
        overrides = {ENV_NAMES[n]: env[ENV_NAMES[n]] for n in cls.OVERRIDABLE if env.get(ENV_NAMES[n])}
        home = env.get(ENV_NAMES["home"])
        return cls(home=Path(home) if home else None, base=base, overrides=overrides,
                   ls_username=env.get("LABEL_STUDIO_USERNAME") or None,
                   ls_api_key=env.get(ENV_NAMES["label_studio_api_key"]) or None)
