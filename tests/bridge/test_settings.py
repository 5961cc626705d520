"""Settings: the only reader of the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from al_loop.errors import ConfigError
from annotator_bridge.settings import ENV_NAMES, FILESYSTEM_BROKER, Settings


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
    }
    assert set(env) == set(ENV_NAMES.values())
    s = Settings.from_env(env)
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
