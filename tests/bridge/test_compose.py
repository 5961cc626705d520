"""docker-compose.yml, deploy/Dockerfile and deploy/.env.example agree with the code.

No Docker engine is needed: the compose file is parsed as YAML, its al-loop commands are
parsed by the real ``al-loop`` argparse parser, and its environment names are compared with
the names ``annotator_bridge.settings`` documents (``ENV_NAMES``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from annotator_bridge.cli import build_parser
from annotator_bridge.commands import serve as serve_cmd
from annotator_bridge.settings import ENV_NAMES, Settings
from annotator_bridge.stack.processes import SERVE_ARGS, WORKER_DEFAULT_ARGS, WORKER_TRAIN_ARGS
from annotator_bridge.worker.config import SCORE_QUEUE, celery_config
from tests.bridge import conftest_services

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / ".env.example"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
AL_LOOP_SERVICES = ("api", "worker-default", "worker-train", "worker-score")
WORKER_SERVICES = ("worker-default", "worker-train", "worker-score")
# names in .env.example that only the infrastructure containers / compose interpolation use
INFRA_NAMES = {"POSTGRES_PASSWORD", "LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LS_PUBLIC_URL", "LS_HOST_PORT",
               "API_HOST_PORT", "API_HOST_IP", "SCORE_WORKER_THREADS"}
# names an al-loop service may set that are not al-loop settings (read by the libraries, not by al-loop)
RUNTIME_NAMES = {"OMP_NUM_THREADS"}
INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}")
# compose's interpolation: ${X}, ${X:-default} (unset or empty), ${X-default} (unset), ${X:?message} (required)
_INTERPOLATE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:?)([-?])([^}]*))?\}")
SECRET_NAMES = ("AL_LOOP_API_TOKEN", "AL_LOOP_WEBHOOK_SECRET", "LABEL_STUDIO_API_KEY", "POSTGRES_PASSWORD",
                "LABEL_STUDIO_PASSWORD")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    return cmd.split() if isinstance(cmd, str) else list(cmd or [])


def _env_example_names() -> list[str]:
    names = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split("=", 1)[0].strip())
    return names


def test_services_present_and_runnable(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "postgres", "label-studio", *AL_LOOP_SERVICES, "flower"} <= set(services)
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"service {name} has neither image nor build"
        assert svc.get("command") or svc.get("image"), f"service {name} has neither command nor image"
    assert services["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"
    assert services["flower"].get("profiles"), "flower must be optional (behind a profile)"
    for name in AL_LOOP_SERVICES:
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_al_loop_commands_parse_with_the_real_cli(compose: dict[str, Any]) -> None:
    parser = build_parser()
    funcs = {}
    for name in AL_LOOP_SERVICES:
        cmd = _command(compose["services"][name])
        assert cmd[0] == "al-loop", f"{name}: {cmd}"
        args = parser.parse_args(cmd[1:])
        funcs[name] = args.func
    assert funcs["api"] is serve_cmd.run_serve
    assert funcs["worker-default"] is serve_cmd.run_worker
    assert funcs["worker-train"] is serve_cmd.run_worker
    assert funcs["worker-score"] is serve_cmd.run_worker
    train = parser.parse_args(_command(compose["services"]["worker-train"])[1:])
    assert train.pool == "solo", "the training worker must not fork (CUDA does not survive fork)"
    argv = serve_cmd.worker_argv(train)
    assert argv[argv.index("--concurrency") + 1] == "1"
    default = parser.parse_args(_command(compose["services"]["worker-default"])[1:])
    assert serve_cmd.worker_argv(default)[serve_cmd.worker_argv(default).index("--pool") + 1] == "threads"
    score = serve_cmd.worker_argv(parser.parse_args(_command(compose["services"]["worker-score"])[1:]))
    # one shard at a time per process (torch's threads do the parallel work); a threads pool would run 4 at once
    assert score[score.index("--pool") + 1] == "solo" and score[score.index("--concurrency") + 1] == "1"
    assert score[score.index("--queues") + 1] == SCORE_QUEUE


def _consumed_queues(compose: dict[str, Any], env: dict[str, str]) -> dict[str, set[str]]:
    """Service -> the queues its ``celery worker`` consumes (``al-loop worker`` argv, train queue from ``env``)."""
    parser = build_parser()
    services = interpolate(compose, env)["services"]
    out = {}
    workers = [name for name, svc in services.items() if _command(svc)[:2] == ["al-loop", "worker"]]
    assert set(workers) >= set(WORKER_SERVICES)
    for name in workers:
        train_queue = services[name]["environment"]["AL_LOOP_TRAIN_QUEUE"]
        argv = serve_cmd.worker_argv(parser.parse_args(_command(services[name])[1:]), train_queue=train_queue)
        out[name] = set(argv[argv.index("--queues") + 1].split(","))
    return out


@pytest.mark.parametrize("train_queue", [None, "gpu-a100"])
def test_every_queue_has_a_consumer(compose: dict[str, Any], tmp_path: Path, train_queue: str | None) -> None:
    """Every queue the Celery config routes a task to (or declares) is consumed by some compose service, and the
    score queue by a service other than the training worker (which waits for its shards)."""
    env = _secrets_env(**({"AL_LOOP_TRAIN_QUEUE": train_queue} if train_queue else {}))
    consumed = _consumed_queues(compose, env)
    settings = Settings(home=tmp_path, database_url="sqlite://", broker_url="redis://127.0.0.1:9/0",
                        artifacts_dir=tmp_path, train_queue=train_queue or "train")
    conf = celery_config(settings)
    queues = {q.name for q in conf["task_queues"]} | {r["queue"] for r in conf["task_routes"].values()}
    assert queues >= {"default", settings.train_queue, SCORE_QUEUE}
    for queue in queues:
        assert any(queue in qs for qs in consumed.values()), f"no compose service consumes the {queue!r} queue"
    trainers = {name for name, qs in consumed.items() if settings.train_queue in qs}
    scorers = {name for name, qs in consumed.items() if SCORE_QUEUE in qs}
    assert scorers - trainers, "the score queue needs a consumer besides the training worker (it waits for shards)"


def test_tests_and_local_stack_start_the_same_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert tuple(_command(services["worker-default"])[1:]) == WORKER_DEFAULT_ARGS
    assert tuple(_command(services["worker-train"])[1:]) == WORKER_TRAIN_ARGS
    assert tuple(_command(services["api"])[1:1 + len(SERVE_ARGS)]) == SERVE_ARGS
    assert conftest_services.WORKER_DEFAULT_ARGS == WORKER_DEFAULT_ARGS
    assert conftest_services.WORKER_TRAIN_ARGS == WORKER_TRAIN_ARGS
    assert conftest_services.SERVE_ARGS == SERVE_ARGS


def test_gpu_reservation_on_the_training_worker(compose: dict[str, Any]) -> None:
    devices = compose["services"]["worker-train"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)


def test_env_names_are_the_settings_names(compose: dict[str, Any]) -> None:
    settings_names = set(ENV_NAMES.values())
    for name in AL_LOOP_SERVICES:
        env = compose["services"][name].get("environment") or {}
        assert isinstance(env, dict)
        unknown = set(env) - settings_names - RUNTIME_NAMES
        assert not unknown, f"{name} sets variables Settings does not read: {sorted(unknown)}"
    example = _env_example_names()
    assert len(example) == len(set(example)), "a name appears twice in deploy/.env.example"
    assert set(example) - INFRA_NAMES == settings_names, \
        "deploy/.env.example must list exactly the Settings names (plus the compose-only ones)"
    used = set(INTERPOLATION.findall(COMPOSE.read_text()))
    assert used <= settings_names | INFRA_NAMES, f"compose interpolates unknown names: {sorted(used - settings_names)}"
    assert used >= INFRA_NAMES, "a compose-only name in .env.example is never used"


def test_label_studio_container_settings(compose: dict[str, Any]) -> None:
    env = compose["services"]["label-studio"]["environment"]
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert env["LABEL_STUDIO_COLLECT_ANALYTICS"] == "false"
    assert env["LABEL_STUDIO_LATEST_VERSION_CHECK"] == "false"
    assert "LABEL_STUDIO_USER_TOKEN" in env and "LABEL_STUDIO_API_KEY" in str(env["LABEL_STUDIO_USER_TOKEN"])
    api_env = compose["services"]["api"]["environment"]
    assert api_env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert api_env["AL_LOOP_PUBLIC_URL"] == "http://api:8000"
    assert api_env["AL_LOOP_BROKER_URL"].startswith("redis://redis:")
    assert api_env["AL_LOOP_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert 'torch==2.13.0' in text
    assert ".[server,postgres]" in text
    assert "gunicorn" in text


# ---------------------------------------------------------------------------- secrets and published ports
class MissingVariable(Exception):
    """What ``docker compose`` stops with for a ``${X:?message}`` whose variable is unset."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` (any YAML node) with compose's variable interpolation applied, as docker compose does it."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, colon, op, arg = m.groups()
        current = env.get(name)
        missing = current is None or (colon == ":" and current == "")
        if op is None:
            return current or ""
        if op == "?" and missing:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        return arg if op == "-" and missing else (current or "")

    return _INTERPOLATE.sub(sub, value)


def _secrets_env(**over: str) -> dict[str, str]:
    env = {name: f"real-{name.lower()}-4f9a2c" for name in SECRET_NAMES}
    env.update(over)
    return env


def test_compose_has_no_placeholder_secrets_and_stops_without_them(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"\$\{[A-Z_]+:?-[^}]*change-me", text), "a secret falls back to a placeholder"
    for name in SECRET_NAMES:
        uses = re.findall(r"\$\{" + name + r"(:?[-?])?[^}]*\}", text)
        assert uses and all(op == ":?" for op in uses), f"{name} must be required (${{{name}:?message}})"
    interpolate(compose, _secrets_env())  # every secret given: compose starts
    for name in SECRET_NAMES:
        for env in (_secrets_env(**{name: ""}), {k: v for k, v in _secrets_env().items() if k != name}):
            with pytest.raises(MissingVariable, match=name):
                interpolate(compose, env)
    api = interpolate(compose, _secrets_env())["services"]["api"]["environment"]
    assert api["AL_LOOP_API_TOKEN"] == "real-al_loop_api_token-4f9a2c"
    assert "change-me" not in str(interpolate(compose, _secrets_env()))


def test_api_and_flower_are_published_on_loopback_by_default(compose: dict[str, Any]) -> None:
    services = interpolate(compose, _secrets_env())["services"]
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    exposed = interpolate(compose, _secrets_env(API_HOST_IP="0.0.0.0", API_HOST_PORT="9000"))["services"]
    assert exposed["api"]["ports"] == ["0.0.0.0:9000:8000"]
    readme = (REPO / "deploy" / "README.md").read_text()
    assert "API_HOST_IP" in readme, "deploy/README.md must say how to expose the API"
