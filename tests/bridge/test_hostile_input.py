"""Hostile input gets a 4xx with a clear JSON message, never a 5xx (issue 10, item 3).

Each case of the issue's list: deep JSON, NaN/Infinity/1e400, integers past 64 bits, ids past the
database's range in URLs and webhooks, lone surrogates and NUL in text, unbounded config numbers,
a base_model that is no model, a push of an unfinished round, bodies over the size limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from al_loop.config import LoopConfig, TrainingConfig
from al_loop.errors import ConfigError
from al_loop.model_paths import check_base_model, resolve_model_path
from annotator_bridge.labelstudio.convert import MAX_ID, WebhookPayloadError, parse_webhook
from annotator_bridge.web.mlbackend import ls_project_id
from annotator_bridge.web.validate import MAX_DEPTH, parse_json
from tests.bridge.test_loop import cls_spec
from tests.bridge.test_web import AUTH, HOOK, assert_error, build


class QueueOnly:
    """A dispatcher that only records (a queue): rounds stay pending, nothing runs behind the request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def ingest_event(self, project_id: int, payload: dict[str, Any]) -> None:
        self.calls.append(("ingest_event", (project_id, payload)))

    def run_round(self, project_id: int, round_id: int) -> None:
        self.calls.append(("run_round", (project_id, round_id)))

    def push_round(self, round_id: int) -> None:
        self.calls.append(("push_round", (round_id,)))

    def reconcile(self, project_id: int) -> None:
        self.calls.append(("reconcile", (project_id,)))

    def run_adaptation(self, adaptation_id: int) -> None:
        self.calls.append(("run_adaptation", (adaptation_id,)))


@pytest.fixture
def web(tmp_path: Path) -> SimpleNamespace:
    env = build(tmp_path)
    resp = env.client.post("/api/projects", json=cls_spec(), headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    env.pid = resp.get_json()["project"]["id"]
    env.ls_id = resp.get_json()["project"]["integration"]["ls_project_id"]
    resp = env.client.post(f"/api/projects/{env.pid}/items", json=[{"id": f"i{i}", "text": f"text {i}"}
                                                                    for i in range(8)], headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    return env


def post_raw(web: SimpleNamespace, path: str, data: str | bytes, headers: dict[str, str] | None = None) -> Any:
    return web.client.post(path, data=data, content_type="application/json", headers={**AUTH, **HOOK,
                                                                                        **(headers or {})})


POSTS = ["/setup", "/predict", "/webhook", "/ml/setup", "/ml/predict", "/ml/webhook", "/api/projects",
         "/api/projects/1/items", "/api/projects/1/rounds", "/api/projects/1/rounds/0/push",
         "/api/projects/1/versions/1/promote", "/api/projects/1/rollback", "/api/projects/1/reconcile"]
BODY_ROUTES = POSTS[:8]  # the routes that read a body


# ---------------------------------------------------------------------------- bodies
@pytest.mark.parametrize("path", BODY_ROUTES)
def test_json_nested_1000_deep_is_400_everywhere(web: SimpleNamespace, path: str) -> None:
    for body in ('{"a":' * 1000 + "1" + "}" * 1000, "[" * 1000 + "]" * 1000,
                 '{"tasks": ' + "[" * 100 + "]" * 100 + "}"):
        err = assert_error(post_raw(web, path, body), 400, "BadRequest")
        assert "nested deeper" in err["message"], err


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_nan_and_infinity_are_400(web: SimpleNamespace, path: str) -> None:
    for literal in ("NaN", "Infinity", "-Infinity", "1e400", "-1e999"):
        body = '{"project": 1, "tasks": [], "action": "START_TRAINING", "x": ' + literal + "}"
        err = assert_error(post_raw(web, path, body), 400)
        if path != "/api/projects":  # the spec reports its own fields (below)
            assert "body.x" in err["message"] and "finite" in err["message"], err


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_integers_past_64_bits_and_4300_digits_are_400(web: SimpleNamespace, path: str) -> None:
    assert_error(post_raw(web, path, f'{{"x": {2**70}}}'), 400)
    assert_error(post_raw(web, path, '{"x": ' + "9" * 5000 + "}"), 400)


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_lone_surrogates_nul_and_bad_utf8_are_400(web: SimpleNamespace, path: str) -> None:
    err = assert_error(post_raw(web, path, '{"x": ["ok", "\\ud800"]}'), 400)
    assert "body.x[1]" in err["message"] and "Unicode" in err["message"], err
    err = assert_error(post_raw(web, path, '{"\\udfff": 1}'), 400)
    assert "key" in err["message"], err
    err = assert_error(post_raw(web, path, '{"x": "a\\u0000b"}'), 400)
    assert "NUL" in err["message"], err
    err = assert_error(post_raw(web, path, b'{"x": "\xff\xfe"}'), 400)
    assert "UTF-8" in err["message"], err
    assert_error(post_raw(web, path, "{not json"), 400)


def test_item_text_with_a_lone_surrogate_is_400_and_nothing_is_stored(web: SimpleNamespace) -> None:
    before = len(web.store.get_items(web.pid))
    body = json.dumps([{"id": "s1", "text": "fine"}, {"id": "s2", "text": "bad \ud800 text"}])
    err = assert_error(post_raw(web, f"/api/projects/{web.pid}/items", body), 400)
    assert "body[1].text" in err["message"], err
    assert len(web.store.get_items(web.pid)) == before


def test_nul_in_an_import_path_is_400(web: SimpleNamespace) -> None:
    resp = post_raw(web, f"/api/projects/{web.pid}/items", json.dumps({"path": "/tmp/x\u0000.csv", "format": "csv"}))
    assert "NUL" in assert_error(resp, 400)["message"]


def test_bodies_over_the_size_limit_are_413(tmp_path: Path) -> None:
    env = build(tmp_path, AL_LOOP_MAX_REQUEST_MB="1")
    big = json.dumps([{"id": f"x{i}", "text": "word " * 40} for i in range(6000)])
    assert len(big) > 2**20
    for path in ("/api/projects", "/predict", "/webhook", "/setup", "/ml/predict"):
        assert_error(post_raw(env, path, big), 413)


def test_the_body_walk_is_iterative_and_names_the_path() -> None:
    deep = json.dumps({"a": [[[{"b": "\ud800"}]]]})
    with pytest.raises(Exception, match=r"body\.a\[0\]\[0\]\[0\]\.b"):
        parse_json(deep.encode())
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json(ok.encode()) is not None
    with pytest.raises(Exception, match="nested deeper"):
        parse_json(("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode())
    assert parse_json(b"\xef\xbb\xbf{\"a\": 1}") == {"a": 1}  # a UTF-8 byte order mark is fine


# ---------------------------------------------------------------------------- ids
PROJECT_ROUTES = [("GET", "/api/projects/{id}"), ("POST", "/api/projects/{id}/items"),
                  ("GET", "/api/projects/{id}/rounds"), ("GET", "/api/projects/{id}/rounds/0"),
                  ("POST", "/api/projects/{id}/rounds"), ("POST", "/api/projects/{id}/rounds/0/push"),
                  ("GET", "/api/projects/{id}/versions"), ("POST", "/api/projects/{id}/versions/1/promote"),
                  ("POST", "/api/projects/{id}/rollback"), ("GET", "/api/projects/{id}/status"),
                  ("POST", "/api/projects/{id}/reconcile")]


@pytest.mark.parametrize(("method", "route"), PROJECT_ROUTES)
def test_huge_ids_in_urls_are_404(web: SimpleNamespace, method: str, route: str) -> None:
    body = [{"id": "z", "text": "z"}] if route.endswith("/items") else None
    for big in (2**31, 10**18 - 1, 2**63 - 1, 2**63, 2**70, 10**40):
        resp = web.client.open(route.format(id=big), method=method, headers=AUTH, json=body)
        assert_error(resp, 404)


@pytest.mark.parametrize("path", ["/api/projects/1/rounds/{big}", "/api/projects/1/rounds/{big}/push",
                                  "/api/projects/1/versions/{big}/promote", "/dashboard/{big}",
                                  "/dashboard/{big}/data.json", "/dashboard/{big}/fragment",
                                  "/dashboard/1/rounds/{big}", "/dashboard/1/rounds/{big}/report.json"])
def test_huge_inner_ids_are_404(web: SimpleNamespace, path: str) -> None:
    for big in (2**63, 2**70):
        method = "POST" if path.endswith(("push", "promote")) else "GET"
        resp = web.client.open(path.format(big=big), method=method, headers=AUTH)
        assert resp.status_code in (401, 404), (path, resp.status_code)  # 401: a dashboard behind a token


def test_label_studio_project_refs_out_of_range_are_no_project(web: SimpleNamespace) -> None:
    assert ls_project_id(2**70) is None and ls_project_id("99999999999999999999.5") is None
    assert ls_project_id("\u00b3") is None and ls_project_id(0) is None and ls_project_id("7.1") == 7
    for ref in (2**62, "9223372036854775808.1", "\u00b3", -1):
        assert web.client.post("/setup", json={"project": ref}).status_code == 200
        resp = web.client.post("/predict", json={"project": ref, "tasks": [{"id": 1, "data": {"text": "x"}}]})
        assert resp.status_code == 200 and len(resp.get_json()["results"]) == 1


def annotations_created(ls_id: int, tasks: Any) -> dict[str, Any]:
    return {"action": "ANNOTATIONS_CREATED", "project": {"id": ls_id},
            "annotation": [{"id": 1, "task": 1, "result": []}], "task": tasks}


@pytest.mark.parametrize("payload", [
    lambda ls: annotations_created(ls, [{"id": [1]}]),
    lambda ls: annotations_created(ls, [{"id": 2**70}]),
    lambda ls: annotations_created(ls, ["not a task"]),
    lambda ls: {"action": "TASKS_CREATED", "project": {"id": ls}, "tasks": [{"id": 2**70, "data": {"text": "t"}}]},
    lambda ls: {"action": "TASKS_CREATED", "project": {"id": ls}, "tasks": [{"id": 3, "data": {"item_id": [1]}}]},
    lambda ls: {"action": "TASKS_CREATED", "project": {"id": ls}, "tasks": [{"id": 3, "data": {"item_id": "x" * 201}}]},
    lambda ls: {"action": "TASKS_CREATED", "project": {"id": ls}, "tasks": {"id": 3}},
    lambda ls: {"action": "ANNOTATION_CREATED", "project": {"id": ls}, "annotation": {"id": 2**40, "task": 1}},
    lambda ls: {"action": "ANNOTATION_CREATED", "project": {"id": ls}, "annotation": {"id": 1, "task": 2**63}},
    lambda ls: {"action": "ANNOTATION_CREATED", "project": {"id": ls},
                "annotation": {"id": 1, "task": 1, "updated_at": "x" * 65}},
    lambda ls: {"action": "ANNOTATIONS_DELETED", "project": {"id": ls}, "annotations": [{"id": 2**63}]},
    lambda ls: {"action": "START_TRAINING", "project": 2**40},
    lambda ls: {"action": "PROJECT_UPDATED", "project": {"id": 2**70}},
    lambda ls: {"action": "X" * 101, "project": {"id": ls}},
], ids=lambda f: "payload")
def test_unreadable_webhooks_are_400_before_anything_is_queued(tmp_path: Path, payload: Any) -> None:
    from tests.bridge.test_loop import make_env

    queue = QueueOnly()
    env = make_env(tmp_path, extra_env={"AL_LOOP_API_TOKEN": "api-token-123"}, dispatcher=queue)  # type: ignore[arg-type]
    from annotator_bridge.web import create_app

    client = create_app(env.settings, store=env.store, loop=env.loop, dispatcher=queue).test_client()  # type: ignore[arg-type]
    created = client.post("/api/projects", json=cls_spec(), headers=AUTH).get_json()["project"]
    ls_id = created["integration"]["ls_project_id"]
    items_before = env.store.get_items(created["id"])
    body = payload(ls_id)
    with pytest.raises(WebhookPayloadError):
        parse_webhook(body)
    resp = client.post("/webhook", json=body, headers=HOOK)
    assert assert_error(resp, 400)["type"] in ("WebhookPayloadError", "BadRequest")  # BadRequest: past 64 bits
    assert [c for c in queue.calls if c[0] == "ingest_event"] == []
    assert env.store.get_items(created["id"]) == items_before


def test_largest_label_studio_id_is_accepted() -> None:
    event = parse_webhook({"action": "ANNOTATION_CREATED", "project": {"id": MAX_ID},
                           "annotation": {"id": MAX_ID, "task": MAX_ID, "result": []}})
    assert event.task_id == MAX_ID  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- config numbers, base_model
@pytest.mark.parametrize(("over", "field", "allowed"), [
    ({"batch_size": 2**70}, "'batch_size'", "[1, 100000]"),
    ({"batch_size": 1.5}, "'batch_size'", "[1, 100000]"),
    ({"batch_size": True}, "'batch_size'", "[1, 100000]"),
    ({"retrain_every": 1e400}, "'retrain_every'", "[0, 1000000]"),
    ({"seed_size": -1}, "'seed_size'", "[1, 100000]"),
    ({"seed": 2**40}, "'seed'", "[0, 2147483647]"),
    ({"loop": {"dedupe_threshold": float("nan")}}, "'dedupe_threshold'", "[0, 1]"),
    ({"training": {"max_length": 2**70}}, "'training.max_length'", "[16, 8192]"),
    ({"training": {"batch_size": 1.5}}, "'training.batch_size'", "[1, 4096]"),
    ({"training": {"learning_rate": 1e400}}, "'training.learning_rate'", "(0, 1]"),
    ({"training": {"warm_start": "yes"}}, "'training.warm_start'", "true or false"),
    ({"training": {"device": "gpu0"}}, "device", "cuda:N"),
    ({"label_studio": {"project_id": 2**40}}, "label_studio.project_id", "[1, 2147483647]"),
])
def test_config_numbers_are_typed_and_bounded(web: SimpleNamespace, over: dict[str, Any], field: str,
                                              allowed: str) -> None:
    text = json.dumps(cls_spec(name="other", **over), allow_nan=True).replace("Infinity", "1e400")
    err = assert_error(post_raw(web, "/api/projects", text), 400, "ConfigError")
    assert field in err["message"] and allowed in err["message"], err


def test_start_round_batch_size_is_bounded(web: SimpleNamespace) -> None:
    for bad in (2**70, 0, 1.5, "3"):
        err = assert_error(web.client.post(f"/api/projects/{web.pid}/rounds", json={"batch_size": bad},
                                           headers=AUTH), 400)
        assert "batch_size" in err["message"]


def test_config_classes_refuse_what_a_round_could_not_use() -> None:
    for bad in ({"batch_size": 2**70}, {"max_length": 2**70}, {"learning_rate": float("inf")}, {"seed": -1},
                {"head_c": 0}, {"precision": 16}):
        with pytest.raises(ConfigError):
            TrainingConfig(**bad)
    for bad_loop in ({"retrain_every": float("inf")}, {"batch_size": 1.5}, {"max_pool_scored": 2**64}):
        with pytest.raises(ConfigError):
            LoopConfig(**bad_loop)
    assert TrainingConfig(learning_rate=1, head_learning_rate=None).learning_rate == 1  # ints are numbers


def fake_hf_cache(root: Path, repo: str, config: dict[str, Any] | None) -> Path:
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    if config is not None:
        (snap / "config.json").write_text(json.dumps(config))
    return snap


def test_base_model_is_checked_when_the_project_is_created(web: SimpleNamespace, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    cache = tmp_path / "hf"
    fake_hf_cache(cache, "acme/tiny-bert", {"model_type": "bert"})
    fake_hf_cache(cache, "acme/empty", None)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = resolve_model_path("default")
    for i, name in enumerate(["default", local, "acme/tiny-bert"]):
        resp = web.client.post("/api/projects", json=cls_spec(name=f"ok{i}", base_model=name), headers=AUTH)
        assert resp.status_code == 201, (name, resp.get_json())
    for i, name in enumerate(["/etc", str(tmp_path), "acme/empty", "nobody/no-such-model-4711", "../../etc",
                              "~nobody-user-4711/x", "a" * 300, "x/y/z"]):
        resp = web.client.post("/api/projects", json=cls_spec(name=f"bad{i}", base_model=name), headers=AUTH)
        err = assert_error(resp, 400, "ConfigError")
        assert "'base_model'" in err["message"], err
    assert check_base_model(local) == local


def test_the_base_model_check_never_imports_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from al_loop.model_paths import check_base_model; check_base_model('default'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- state and output
def test_push_of_an_unfinished_round_is_409_and_nothing_is_queued(tmp_path: Path) -> None:
    from annotator_bridge.web import create_app
    from tests.bridge.test_loop import make_env

    queue = QueueOnly()
    env = make_env(tmp_path, extra_env={"AL_LOOP_API_TOKEN": "api-token-123"}, dispatcher=queue)  # type: ignore[arg-type]
    client = create_app(env.settings, store=env.store, loop=env.loop, dispatcher=queue).test_client()  # type: ignore[arg-type]
    pid = client.post("/api/projects", json=cls_spec(), headers=AUTH).get_json()["project"]["id"]
    client.post(f"/api/projects/{pid}/items", json=[{"id": f"i{i}", "text": f"t {i}"} for i in range(8)],
                headers=AUTH)
    assert client.post(f"/api/projects/{pid}/rounds", headers=AUTH).status_code == 202
    err = assert_error(client.post(f"/api/projects/{pid}/rounds/0/push", headers=AUTH), 409, "ConflictError")
    assert "pending" in err["message"] and "succeeded" in err["message"]
    assert [c for c in queue.calls if c[0] == "push_round"] == []


def test_responses_never_carry_nan_or_infinity(web: SimpleNamespace) -> None:
    assert web.app.json.dumps({"a": float("inf"), "b": [float("nan"), 1.5]}) == '{"a": null, "b": [null, 1.5]}'
    with web.app.app_context():
        from flask import jsonify

        assert jsonify({"x": float("-inf")}).get_data(as_text=True).strip() == '{"x":null}'

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in a response")

    for path in ("/api/projects", f"/api/projects/{web.pid}", f"/api/projects/{web.pid}/status"):
        resp = web.client.get(path, headers=AUTH)
        assert resp.status_code == 200
        json.loads(resp.get_data(as_text=True), parse_constant=refuse)


def test_errors_name_the_problem_and_never_echo_huge_values(web: SimpleNamespace) -> None:
    body = cls_spec(name="n", batch_size=int("7" * 4000))
    err = assert_error(post_raw(web, "/api/projects", json.dumps(body)), 400)
    assert len(err["message"]) < 400, err
    resp = web.client.post("/webhook", json={"action": "SOMETHING_NEW" * 7, "project": {"id": web.ls_id}},
                           headers=HOOK)
    assert resp.status_code == 200 and len(resp.get_data()) < 400


def test_the_spec_takes_every_loop_key_at_the_top_level_and_names_nested_fields() -> None:
    from annotator_bridge.loop import ProjectSpec

    spec = ProjectSpec.from_dict(cls_spec(dedupe_threshold=0.5, training={"max_length": 64}))
    assert spec.loop.dedupe_threshold == 0.5 and spec.training.max_length == 64
    with pytest.raises(ConfigError, match=r"'training\.head_c' must be a number in \(0, 1000000\]"):
        ProjectSpec.from_dict(cls_spec(training={"head_c": -1}))
