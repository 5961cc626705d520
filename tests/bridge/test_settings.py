"""Settings: the only reader of the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from al_loop.errors import ConfigError
from annotator_bridge.settings import ENV_NAMES, FILESYSTEM_BROKER, Settings, StackEnvironment


def test_defaults_from_empty_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.home == tmp_path / ".al-loop"
    assert s.database_url == f"sqlite:///{tmp_path / '.al-loop' / 'al-loop.db'}"
    assert s.broker_url == FILESYSTEM_BROKER and s.uses_filesystem_broker
    assert s.broker_dir == s.home / "broker"
    assert s.artifacts_dir == s.home / "artifacts"
    assert s.api_token is None and s.webhook_secret is None and s.public_url is None
    assert not s.label_studio_configured
    assert s.visibility_timeout == 7200 and s.train_queue == "train"
    assert s.max_request_bytes == 64 * 1024 * 1024
    assert s.import_dirs == () and s.log_level == "INFO"
    assert s.sqlite_path == s.home / "al-loop.db"


def test_every_variable_is_read(tmp_path: Path) -> None:
    env = {
        "AL_LOOP_HOME": str(tmp_path / "h"),
        "AL_LOOP_DATABASE_URL": "postgresql+psycopg://al:pw@db:5432/al",
        "AL_LOOP_BROKER_URL": "redis://127.0.0.1:6379/0",
        "AL_LOOP_ARTIFACTS_DIR": str(tmp_path / "art"),
        "AL_LOOP_API_TOKEN": "api-token",
        "AL_LOOP_DASHBOARD_TOKEN": "dash-token",
        "AL_LOOP_WEBHOOK_SECRET": "hook-secret",
        "AL_LOOP_PUBLIC_URL": "http://127.0.0.1:9090/",
        "LABEL_STUDIO_URL": "http://127.0.0.1:8080",
        "LABEL_STUDIO_API_KEY": "ls-key",
        "AL_LOOP_VISIBILITY_TIMEOUT": "3600",
        "AL_LOOP_TRAIN_QUEUE": "gpu0",
        "AL_LOOP_MAX_REQUEST_MB": "2",
        "AL_LOOP_IMPORT_DIRS": os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]),
        "AL_LOOP_MAX_IMPORT_MB": "3",
        "AL_LOOP_LOG_LEVEL": "debug",
        "AL_LOOP_TRAIN_CPU_PRIORITY": " Idle ",
    }
    assert set(env) == set(ENV_NAMES.values())
    s = Settings.from_env(env)
    assert s.train_cpu_priority == "idle"
    assert s.home == tmp_path / "h" and s.artifacts_dir == tmp_path / "art"
    assert s.database_url.startswith("postgresql") and s.sqlite_path is None
    assert s.broker_url == "redis://127.0.0.1:6379/0" and not s.uses_filesystem_broker
    assert (s.api_token, s.webhook_secret, s.label_studio_api_key) == ("api-token", "hook-secret", "ls-key")
    assert s.dashboard_token == "dash-token" and "dash-token" not in repr(s) + repr(s.to_dict())
    assert s.public_url == "http://127.0.0.1:9090"  # trailing slash dropped
    assert s.label_studio_configured
    assert s.visibility_timeout == 3600 and s.train_queue == "gpu0"
    assert s.max_request_bytes == 2 * 1024 * 1024
    assert s.import_dirs == (tmp_path / "a", tmp_path / "b")
    assert s.max_import_bytes == 3 * 1024 * 1024
    assert s.log_level == "DEBUG"


def test_secrets_never_in_repr_or_dict() -> None:
    s = Settings.from_env({"AL_LOOP_HOME": "/tmp/x", "AL_LOOP_API_TOKEN": "tok-123",
                           "AL_LOOP_WEBHOOK_SECRET": "sec-456", "LABEL_STUDIO_URL": "http://ls:8080",
                           "LABEL_STUDIO_API_KEY": "key-789",
                           "AL_LOOP_DATABASE_URL": "postgresql://u:dbpass@db/al"})
    text = repr(s) + repr(s.to_dict())
    for secret in ("tok-123", "sec-456", "key-789", "dbpass"):
        assert secret not in text
    d = s.to_dict()
    assert d["api_token"] == "set" and d["webhook_secret"] == "set" and d["database_url"] == "postgresql://u:***@db/al"


def test_empty_values_count_as_unset(tmp_path: Path) -> None:
    s = Settings.from_env({"AL_LOOP_HOME": str(tmp_path), "AL_LOOP_API_TOKEN": "  ", "AL_LOOP_BROKER_URL": "",
                           "LABEL_STUDIO_URL": "", "LABEL_STUDIO_API_KEY": ""})
    assert s.api_token is None and s.broker_url == FILESYSTEM_BROKER and not s.label_studio_configured


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"AL_LOOP_VISIBILITY_TIMEOUT": "soon"}, "AL_LOOP_VISIBILITY_TIMEOUT"),
        ({"AL_LOOP_VISIBILITY_TIMEOUT": "5"}, "AL_LOOP_VISIBILITY_TIMEOUT"),
        ({"AL_LOOP_MAX_REQUEST_MB": "0"}, "AL_LOOP_MAX_REQUEST_MB"),
        ({"AL_LOOP_MAX_REQUEST_MB": "1.5"}, "AL_LOOP_MAX_REQUEST_MB"),
        ({"AL_LOOP_TRAIN_QUEUE": "bad queue"}, "AL_LOOP_TRAIN_QUEUE"),
        ({"AL_LOOP_TRAIN_QUEUE": "default"}, "AL_LOOP_TRAIN_QUEUE"),
        ({"AL_LOOP_PUBLIC_URL": "localhost:9090"}, "AL_LOOP_PUBLIC_URL"),
        ({"LABEL_STUDIO_URL": "ftp://ls"}, "LABEL_STUDIO_URL"),
        ({"LABEL_STUDIO_URL": "http://ls:8080"}, "LABEL_STUDIO_API_KEY"),
        ({"LABEL_STUDIO_API_KEY": "k"}, "LABEL_STUDIO_URL"),
        ({"AL_LOOP_DATABASE_URL": "al-loop.db"}, "AL_LOOP_DATABASE_URL"),
        ({"AL_LOOP_BROKER_URL": "127.0.0.1:6379"}, "AL_LOOP_BROKER_URL"),
        ({"AL_LOOP_LOG_LEVEL": "chatty"}, "AL_LOOP_LOG_LEVEL"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env({"AL_LOOP_HOME": "/tmp/x", **env})


def test_frozen_and_direct_construction_is_validated(tmp_path: Path) -> None:
    s = Settings.from_env({"AL_LOOP_HOME": str(tmp_path)})
    with pytest.raises(AttributeError):
        s.train_queue = "x"  # type: ignore[misc]
    with pytest.raises(ConfigError):
        Settings(home=tmp_path, database_url="sqlite://", broker_url="filesystem://", artifacts_dir=tmp_path,
                 visibility_timeout=0)


def test_ensure_dirs_creates_state_folders(tmp_path: Path) -> None:
    s = Settings.from_env({"AL_LOOP_HOME": str(tmp_path / "home")})
    assert not s.home.exists()  # from_env has no side effects
    s.ensure_dirs()
    for d in (s.home, s.artifacts_dir, s.logs_dir, s.broker_dir / "in", s.broker_dir / "processed"):
        assert d.is_dir()


def test_import_dirs_restrict_server_paths(tmp_path: Path) -> None:
    allowed = tmp_path / "data"
    (allowed / "sub").mkdir(parents=True)
    s = Settings.from_env({"AL_LOOP_HOME": str(tmp_path), "AL_LOOP_IMPORT_DIRS": str(allowed)})
    assert s.allows_import_path(allowed / "sub" / "x.jsonl")
    assert not s.allows_import_path(tmp_path / "other.jsonl")
    assert not s.allows_import_path(allowed / ".." / "other.jsonl")
    assert not Settings.from_env({"AL_LOOP_HOME": str(tmp_path)}).allows_import_path("/etc/anything")


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AL_LOOP_HOME", str(tmp_path / "envhome"))
    monkeypatch.setenv("AL_LOOP_TRAIN_QUEUE", "train-2")
    s = Settings.from_env()
    assert s.home == tmp_path / "envhome" and s.train_queue == "train-2"


def test_file_imports_are_closed_without_import_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = Settings.from_env({"AL_LOOP_HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"importing files from the server is off.*AL_LOOP_IMPORT_DIRS"):
        closed.resolve_import_path(tmp_path / "x.jsonl")
    allowed = tmp_path / "data"
    allowed.mkdir()
    s = Settings.from_env({"AL_LOOP_HOME": str(tmp_path), "AL_LOOP_IMPORT_DIRS": f"~/data{os.pathsep}/"})
    monkeypatch.setenv("HOME", str(tmp_path))
    assert s.resolve_import_path("~/data/t.csv") == allowed / "t.csv"  # expanded once, absolute
    (allowed / "link.csv").symlink_to(tmp_path / "elsewhere.csv")
    assert s.resolve_import_path(allowed / "link.csv") == tmp_path / "elsewhere.csv"  # resolved: "/" allows it
    for path in ("/proc/self/environ", "/dev/zero", "/sys/kernel", "/proc/../proc/self/environ"):
        with pytest.raises(ConfigError, match="/proc, /sys or /dev"):
            s.resolve_import_path(path)
    for bad in (closed, s):
        with pytest.raises(ConfigError, match="NUL"):
            bad.resolve_import_path("/etc/\x00passwd")


def test_max_import_mb(tmp_path: Path) -> None:
    assert Settings.from_env({"AL_LOOP_HOME": str(tmp_path)}).max_import_bytes == 256 * 1024 * 1024
    assert Settings.from_env({"AL_LOOP_HOME": str(tmp_path), "AL_LOOP_MAX_IMPORT_MB": "5"}).max_import_bytes == 5 << 20
    for bad in ("0", "-1", "lots"):
        with pytest.raises(ConfigError, match="AL_LOOP_MAX_IMPORT_MB"):
            Settings.from_env({"AL_LOOP_HOME": str(tmp_path), "AL_LOOP_MAX_IMPORT_MB": bad})


def test_secret_problems_missing_and_placeholder_secrets(tmp_path: Path) -> None:
    base = {"AL_LOOP_HOME": str(tmp_path)}
    assert Settings.from_env(base).secret_problems() == ["AL_LOOP_API_TOKEN is not set",
                                                         "AL_LOOP_WEBHOOK_SECRET is not set"]
    good = {**base, "AL_LOOP_API_TOKEN": "9f1c0e7d2b", "AL_LOOP_WEBHOOK_SECRET": "4a8b6c1d3e"}
    Settings.from_env(good).require_secrets("al-loop serve")
    placeholders = {"AL_LOOP_API_TOKEN": "change-me-al-loop-api-token", "AL_LOOP_WEBHOOK_SECRET": "CHANGEME",
                    "AL_LOOP_DASHBOARD_TOKEN": "change_me", "LABEL_STUDIO_API_KEY": "change-me-label-studio-token",
                    "LABEL_STUDIO_URL": "http://127.0.0.1:8080",
                    "AL_LOOP_DATABASE_URL": "postgresql+psycopg://al_loop:change-me-db-pass@db:5432/al_loop"}
    s = Settings.from_env({**good, **placeholders})
    assert s.secret_problems() == [
        "AL_LOOP_API_TOKEN is a placeholder", "AL_LOOP_DASHBOARD_TOKEN is a placeholder",
        "LABEL_STUDIO_API_KEY is a placeholder", "AL_LOOP_WEBHOOK_SECRET is a placeholder",
        "the password in AL_LOOP_DATABASE_URL is a placeholder"]
    with pytest.raises(ConfigError, match="al-loop worker refuses to start: AL_LOOP_API_TOKEN is a place") as info:
        s.require_secrets("al-loop worker")
    assert "change-me-al-loop-api-token" not in str(info.value)


def test_stack_environment_keeps_import_overrides(tmp_path: Path) -> None:
    env = StackEnvironment.from_env({"AL_LOOP_IMPORT_DIRS": str(tmp_path), "AL_LOOP_MAX_IMPORT_MB": "9"})
    assert env.overrides == {"AL_LOOP_IMPORT_DIRS": str(tmp_path), "AL_LOOP_MAX_IMPORT_MB": "9"}


def test_stack_environment_passes_the_dashboard_token_through() -> None:
    env = StackEnvironment.from_env({"AL_LOOP_DASHBOARD_TOKEN": "s3cret-dash"})
    assert env.overrides == {"AL_LOOP_DASHBOARD_TOKEN": "s3cret-dash"}
    assert "s3cret-dash" not in repr(env)
