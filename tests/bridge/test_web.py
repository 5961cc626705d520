"""The Flask app with the test client: ML-backend protocol, webhook, management API, error mapping."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from al_loop.errors import AlLoopError, ModelLoadError
from al_loop.rounds import PredictService
from al_loop.types import Example, ItemId
from annotator_bridge.dispatch import InlineDispatcher
from annotator_bridge.web import create_app
from annotator_bridge.web.mlbackend import NO_MODEL_VERSION, LinkCache, ls_project_id
from tests.bridge.test_loop import (
    NER_TEXTS,
    SECRET,
    choice,
    cls_items,
    cls_spec,
    gold_label,
    make_env,
    span,
)
from tests.core.fakes import FakeModel

TOKEN = "api-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOOK = {"X-AL-Loop-Secret": SECRET}
REPO = Path(__file__).resolve().parents[2]


def build(tmp_path: Path, **extra_env: str) -> SimpleNamespace:
    env = make_env(tmp_path, extra_env={"AL_LOOP_API_TOKEN": TOKEN, **extra_env})
    env.predictor = PredictService(env.store, FakeModel)
    env.app = create_app(env.settings, store=env.store, loop=env.loop, predictor=env.predictor,
                         dispatcher=env.dispatcher)
    env.client = env.app.test_client()
    return env


@pytest.fixture
def web(tmp_path: Path) -> SimpleNamespace:
    return build(tmp_path, AL_LOOP_IMPORT_DIRS=str(tmp_path))  # path imports are closed by default


@pytest.fixture
def project(web: SimpleNamespace) -> SimpleNamespace:
    resp = web.client.post("/api/projects", json=cls_spec(), headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    web.project = resp.get_json()["project"]
    web.pid = web.project["id"]
    web.ls_id = web.project["integration"]["ls_project_id"]
    resp = web.client.post(f"/api/projects/{web.pid}/items",
                           json=[{"id": e.item_id, "text": e.text} for e in cls_items(20)], headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    return web


def assert_error(resp: Any, status: int, type_: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    return body["error"]


def train_two_rounds(web: SimpleNamespace) -> SimpleNamespace:
    """Cold round, label its batch through webhooks, trained round (promoted)."""
    r0 = web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH).get_json()["round"]
    for s in web.store.get_scores(r0["id"], selected_only=True):
        body = web.gw.annotate(web.gw.task_of(web.ls_id, s.item_id), choice(gold_label(s.item_id)))
        assert web.client.post("/webhook", json=body, headers=HOOK).status_code == 200
    r1 = web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH).get_json()["round"]
    web.r0, web.r1 = r0, web.store.get_round(r1["id"])
    assert web.r1.status == "succeeded" and web.r1.model_version_id is not None
    return web


# ---------------------------------------------------------------------------- auth
API_ROUTES = [
    ("POST", "/api/projects"), ("GET", "/api/projects"), ("GET", "/api/projects/1"),
    ("POST", "/api/projects/1/items"), ("GET", "/api/projects/1/rounds"), ("GET", "/api/projects/1/rounds/0"),
    ("POST", "/api/projects/1/rounds"), ("POST", "/api/projects/1/rounds/0/push"),
    ("GET", "/api/projects/1/versions"), ("POST", "/api/projects/1/versions/1/promote"),
    ("POST", "/api/projects/1/rollback"), ("GET", "/api/projects/1/status"), ("POST", "/api/projects/1/reconcile"),
]


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
def test_every_api_route_needs_the_bearer_token(web: SimpleNamespace, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer"}, {"Authorization": "Bearer tökén"}):
        resp = web.client.open(path, method=method, headers=headers, json={})
        assert_error(resp, 401, "Unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_is_closed_without_a_configured_token(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    client = create_app(env.settings, loop=env.loop).test_client()
    err = assert_error(client.get("/api/projects", headers={"Authorization": "Bearer "}), 401)
    assert "AL_LOOP_API_TOKEN" in err["message"]


def test_secrets_and_bodies_never_logged(project: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    web = project
    with caplog.at_level(logging.DEBUG):
        body = web.gw.annotate(web.gw.task_of(web.ls_id, "i0"), choice("pos"))
        web.client.post("/webhook", json=body, headers=HOOK)
        web.client.get("/api/projects", headers=AUTH)
        web.client.get("/api/projects", headers={"Authorization": "Bearer not-the-token"})
    assert TOKEN not in caplog.text and SECRET not in caplog.text and "not-the-token" not in caplog.text
    assert body["task"]["data"]["text"] not in caplog.text


# ---------------------------------------------------------------------------- ML backend
@pytest.mark.parametrize("prefix", ["", "/ml"])
def test_health(web: SimpleNamespace, prefix: str) -> None:
    resp = web.client.get(f"{prefix}/health")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "UP" and body["model_class"] == "al-loop"


def test_ls_project_reference_parsing() -> None:
    assert ls_project_id("3.1795593595") == 3 and ls_project_id("12") == 12 and ls_project_id(4) == 4
    assert ls_project_id(None) is None and ls_project_id("x.1") is None and ls_project_id(True) is None


def test_setup_reports_promoted_version_or_round_tag(project: SimpleNamespace) -> None:
    web = project
    ask = {"project": f"{web.ls_id}.1795593595", "schema": "<View/>", "hostname": "http://ls", "access_token": "x"}
    assert web.client.post("/setup", json=ask).get_json() == {"model_version": NO_MODEL_VERSION}
    assert web.client.post("/setup", json={"project": "999.1"}).get_json() == {"model_version": NO_MODEL_VERSION}
    assert web.client.post("/setup").status_code == 200
    r0 = web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH).get_json()["round"]
    assert web.client.post("/ml/setup", json=ask).get_json() == {"model_version": r0["version_tag"]}
    train_two_rounds_from_cold(web, r0)
    promoted = web.store.promoted_version(web.pid)
    assert web.client.post("/setup", json=ask).get_json() == {"model_version": promoted.name}


def train_two_rounds_from_cold(web: SimpleNamespace, r0: dict[str, Any]) -> None:
    for s in web.store.get_scores(r0["id"], selected_only=True):
        body = web.gw.annotate(web.gw.task_of(web.ls_id, s.item_id), choice(gold_label(s.item_id)))
        web.client.post("/webhook", json=body, headers=HOOK)
    web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH)


def test_setup_never_loads_a_model(project: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    web = train_two_rounds(project)

    def no_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("/setup loaded a model")

    monkeypatch.setattr(FakeModel, "load", no_load)
    t0 = time.perf_counter()
    assert web.client.post("/setup", json={"project": f"{web.ls_id}.1"}).status_code == 200
    assert time.perf_counter() - t0 < 0.5


def predict_body(web: SimpleNamespace, texts: list[Any], project: Any = None) -> dict[str, Any]:
    tasks = []
    for i, t in enumerate(texts):
        task: dict[str, Any] = {"id": 1000 + i, "annotations": [], "predictions": []}
        if t is not None:
            task["data"] = {"text": t}
        tasks.append(task)
    return {"tasks": tasks, "project": project if project is not None else f"{web.ls_id}.1795593595",
            "label_config": "<View/>", "params": {"login": None, "password": None, "context": None}}


def test_predict_without_a_model_answers_one_empty_result_per_task(project: SimpleNamespace) -> None:
    web = project
    resp = web.client.post("/predict", json=predict_body(web, ["good", "", "bad thing"]))
    results = resp.get_json()["results"]
    assert len(results) == 3
    assert all(r == {"result": [], "score": 1.0, "model_version": NO_MODEL_VERSION} for r in results)
    unknown = web.client.post("/predict", json=predict_body(web, ["a", "b"], project="424242.1")).get_json()
    assert len(unknown["results"]) == 2 and all(r["result"] == [] for r in unknown["results"])
    assert web.client.post("/predict", json=predict_body(web, [])).get_json() == {"results": []}


@pytest.mark.parametrize("prefix", ["", "/ml"])
def test_predict_batch_of_20_plus_empty_text_one_result_each_in_order(project: SimpleNamespace, prefix: str) -> None:
    web = train_two_rounds(project)
    texts: list[Any] = [f"{['good', 'awful', 'great', 'poor'][i % 4]} sample {i}" for i in range(20)]
    texts.insert(7, "")
    texts.insert(13, "   ")
    texts.append(None)  # a task without data
    resp = web.client.post(f"{prefix}/predict", json=predict_body(web, texts))
    assert resp.status_code == 200
    results = resp.get_json()["results"]
    assert len(results) == len(texts) == 23
    version = web.store.promoted_version(web.pid).name
    direct = web.predictor.predict(web.pid, [t for t in texts if t and t.strip()]).predictions
    it = iter(direct)
    for text, r in zip(texts, results, strict=True):
        assert r["model_version"] == version
        if not text or not text.strip():
            assert r["result"] == [] and r["score"] == 1.0
            continue
        expected = next(it)
        assert r["score"] == pytest.approx(expected["confidence"])
        assert r["result"] == [{"from_name": "label", "to_name": "text", "type": "choices",
                                "value": {"choices": expected["labels"]}}]
    # the answers differ from task to task, so the comparison above really checks the order
    assert len({json.dumps(r, sort_keys=True) for r in results if r["result"]}) >= 3


def test_predict_failure_of_the_model_still_answers_every_task(project: SimpleNamespace,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    web = train_two_rounds(project)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ModelLoadError("artifact is corrupt")

    monkeypatch.setattr(web.predictor, "predict", broken)
    results = web.client.post("/predict", json=predict_body(web, ["good", "bad"])).get_json()["results"]
    assert len(results) == 2 and all(r["result"] == [] for r in results)


def test_predict_ner_spans_match_the_text(tmp_path: Path) -> None:
    web = build(tmp_path)
    project = web.loop.create_project({"name": "ner", "task": "ner", "labels": ["Disease"], "strategy": "mnlp",
                                       "batch_size": 2, "seed_size": 3})
    ls_id = web.store.get_link(project.id).ls_project_id
    texts = [f"patients with cancer type {i} and flu" for i in range(8)]
    web.loop.import_items(project.id, [Example(ItemId(f"n{i}"), t) for i, t in enumerate(texts)])
    r0 = web.loop.request_round(project.id)
    for s in web.store.get_scores(r0.id, selected_only=True):
        text = texts[int(s.item_id[1:])]
        body = web.gw.annotate(web.gw.task_of(ls_id, s.item_id), [span(14, 20, "Disease", text)])
        assert web.client.post("/webhook", json=body, headers=HOOK).status_code == 200
    web.loop.request_round(project.id)
    asked = ["cancer in patients", "", *NER_TEXTS]
    results = web.client.post("/predict", json=predict_body(web, asked, project=str(ls_id))).get_json()["results"]
    assert len(results) == len(asked) and results[1]["result"] == []
    found = 0
    for text, r in zip(asked, results, strict=True):
        for item in r["result"]:
            v = item["value"]
            assert item["type"] == "labels" and v["labels"] == ["Disease"] and text[v["start"]:v["end"]] == v["text"]
            found += 1
    assert found >= 1


def test_predict_malformed_requests(web: SimpleNamespace) -> None:
    assert_error(web.client.post("/predict", data="not json", content_type="application/json"), 400, "BadRequest")
    assert_error(web.client.post("/predict", json={"tasks": "nope"}), 400)
    assert_error(web.client.post("/predict", json=[1, 2]), 400)
    assert_error(web.client.get("/predict"), 405, "MethodNotAllowed")


# ---------------------------------------------------------------------------- webhook
@pytest.mark.parametrize("path", ["/webhook", "/ml/webhook"])
def test_webhook_secret_and_ingest(project: SimpleNamespace, path: str) -> None:
    web = project
    body = web.gw.annotate(web.gw.task_of(web.ls_id, "i0"), choice("pos"))
    assert_error(web.client.post(path, json=body), 401)
    assert_error(web.client.post(path, json=body, headers={"X-AL-Loop-Secret": "guess"}), 401)
    assert web.store.labelled_examples(web.pid) == []
    resp = web.client.post(path, json=body, headers=HOOK)
    assert resp.status_code == 200 and resp.get_json()["status"] == "queued"
    assert [e.item_id for e in web.store.labelled_examples(web.pid)] == ["i0"]
    assert ("ingest_event", (web.pid,)) in web.dispatcher.calls


def test_webhook_without_configured_secret_accepts_and_warns_once(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    env = make_env(tmp_path, secret=None)
    client = create_app(env.settings, loop=env.loop).test_client()
    project = env.loop.create_project(cls_spec())
    env.loop.import_items(project.id, cls_items(3))
    ls_id = env.store.get_link(project.id).ls_project_id
    with caplog.at_level(logging.WARNING):
        for item in ("i0", "i1"):
            body = env.gw.annotate(env.gw.task_of(ls_id, item), choice("pos"))
            assert client.post("/webhook", json=body).status_code == 200
    assert caplog.text.count("AL_LOOP_WEBHOOK_SECRET is not set") == 1


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        [1, 2, 3],
        {"no_action": True},
        {"action": 5},
        {"action": "ANNOTATION_CREATED"},
        {"action": "ANNOTATION_CREATED", "project": {"id": "one"}, "annotation": {"id": 1, "task": 1}},
        {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": "1", "task": 1}},
        {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 1, "task": 1, "result": "x"}},
        {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 1}},
        {"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": [{"id": None}]},
        {"action": "START_TRAINING"},
    ],
)
def test_malformed_webhooks_are_400(project: SimpleNamespace, body: Any) -> None:
    web = project
    if isinstance(body, str):
        resp = web.client.post("/webhook", data=body, content_type="application/json", headers=HOOK)
    else:
        resp = web.client.post("/webhook", json=body, headers=HOOK)
    assert_error(resp, 400)
    assert web.dispatcher.calls == [c for c in web.dispatcher.calls if c[0] != "ingest_event"]


def test_webhook_for_unknown_project_is_404_and_ignored_actions_are_200(project: SimpleNamespace) -> None:
    web = project
    body = web.gw.annotate(web.gw.task_of(web.ls_id, "i0"), choice("pos"))
    body["project"]["id"] = 4242
    assert_error(web.client.post("/webhook", json=body, headers=HOOK), 404, "NotFoundError")
    resp = web.client.post("/webhook", json={"action": "LABEL_LINK_CREATED", "project": {"id": web.ls_id}},
                           headers=HOOK)
    assert resp.status_code == 200 and resp.get_json()["status"] == "ignored"
    resp = web.client.post("/webhook", json={"action": "SOMETHING_NEW"}, headers=HOOK)
    assert resp.status_code == 200 and resp.get_json()["status"] == "ignored"
    start = web.client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": web.ls_id}},
                            headers=HOOK)
    assert start.status_code == 200 and web.store.list_rounds(web.pid)[0].trigger == "label_studio"


def test_webhook_reads_the_link_from_the_database_once(project: SimpleNamespace,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A known link is answered from memory (the webhook path opens no SQLite transaction under load);
    an unknown Label Studio project is looked up every time, so a link made a moment ago is found."""
    web = project
    lookups: list[int] = []
    real = web.store.find_link

    def counting(ls_id: int) -> Any:
        lookups.append(ls_id)
        return real(ls_id)

    monkeypatch.setattr(web.store, "find_link", counting)
    for item in ("i0", "i1", "i2"):
        body = web.gw.annotate(web.gw.task_of(web.ls_id, item), choice("pos"))
        resp = web.client.post("/webhook", json=body, headers=HOOK)
        assert resp.status_code == 200 and resp.get_json()["project_id"] == web.pid
    assert lookups == [web.ls_id]
    body = web.gw.annotate(web.gw.task_of(web.ls_id, "i3"), choice("pos"))
    body["project"]["id"] = 4242
    for _ in range(2):
        assert_error(web.client.post("/webhook", json=body, headers=HOOK), 404, "NotFoundError")
    assert lookups == [web.ls_id, 4242, 4242]
    assert {e.item_id for e in web.store.labelled_examples(web.pid)} == {"i0", "i1", "i2"}


def test_link_cache_answers_known_links_and_re_reads_them_behind() -> None:
    now = [0.0]
    table: dict[int, int] = {}
    asked: list[int] = []

    def find(ls_id: int) -> int | None:
        asked.append(ls_id)
        return table.get(ls_id)

    cache = LinkCache(find, ttl=10.0, clock=lambda: now[0], spawn=lambda refresh: refresh())
    assert cache.lookup(7) is None and cache.lookup(7) is None and asked == [7, 7]  # misses are not kept
    table[7] = 3  # linked a moment later: found at once
    assert cache.lookup(7) == 3 and asked == [7, 7, 7]
    now[0] = 9.9
    assert cache.lookup(7) == 3 and len(asked) == 3
    now[0] = 10.0
    table[7] = 4
    assert cache.lookup(7) == 3 and len(asked) == 4  # expired: answered, and re-read behind the answer
    assert cache.lookup(7) == 4 and len(asked) == 4
    del table[7]
    now[0] = 30.0
    assert cache.lookup(7) == 4 and len(asked) == 5  # the re-read finds no link: dropped
    assert cache.lookup(7) is None and len(asked) == 6
    table[7] = 5
    assert cache.lookup(7) == 5
    cache.forget()
    assert cache.lookup(7) == 5 and len(asked) == 8


def test_link_cache_re_reads_an_expired_link_once_and_no_webhook_waits() -> None:
    now = [0.0]
    reading, release = threading.Event(), threading.Event()
    asked: list[int] = []
    threads: list[threading.Thread] = []

    def find(ls_id: int) -> int | None:
        asked.append(ls_id)
        if len(asked) == 2:
            reading.set()
            assert release.wait(10)
            return 4
        if len(asked) == 3:
            raise RuntimeError("database gone")
        return 3

    def spawn(refresh: Any) -> None:
        threads.append(threading.Thread(target=refresh))
        threads[-1].start()

    cache = LinkCache(find, ttl=10.0, clock=lambda: now[0], spawn=spawn)
    assert cache.lookup(7) == 3
    now[0] = 11.0
    assert cache.lookup(7) == 3 and reading.wait(10)
    assert [cache.lookup(7) for _ in range(5)] == [3] * 5 and len(asked) == 2 and len(threads) == 1
    release.set()
    threads[0].join(10)
    assert cache.lookup(7) == 4 and len(asked) == 2
    now[0] = 22.0
    assert cache.lookup(7) == 4  # this re-read fails: the link stays, the next lookup tries again
    threads[1].join(10)
    assert cache.lookup(7) == 4 and len(threads) == 3
    threads[2].join(10)
    assert asked == [7, 7, 7, 7] and cache.lookup(7) == 3


def test_webhook_when_the_queue_is_down_is_503(project: SimpleNamespace) -> None:
    web = project

    class BrokerUnavailable(AlLoopError):
        pass

    class Down(InlineDispatcher):
        def ingest_event(self, project_id: int, payload: dict[str, Any]) -> None:
            raise BrokerUnavailable("the task queue is unavailable")

    web.app.extensions["al_loop"].dispatcher = Down()
    body = web.gw.annotate(web.gw.task_of(web.ls_id, "i0"), choice("pos"))
    assert_error(web.client.post("/webhook", json=body, headers=HOOK), 503, "BrokerUnavailable")


def test_default_app_acks_webhooks_before_the_work_is_done(tmp_path: Path) -> None:
    env = make_env(tmp_path, extra_env={"AL_LOOP_API_TOKEN": TOKEN})
    project = env.loop.create_project(cls_spec())
    env.loop.import_items(project.id, cls_items(3))
    ls_id = env.store.get_link(project.id).ls_project_id
    app = create_app(env.settings, store=env.store)  # no dispatcher: background thread
    services = app.extensions["al_loop"]
    services.loop._gateway = env.gw
    slow_started = []
    real = services.loop.handle_event

    def slow(project_id: int, payload: dict[str, Any]) -> Any:
        slow_started.append(1)
        time.sleep(0.5)
        return real(project_id, payload)

    services.loop.handle_event = slow
    client = app.test_client()
    body = env.gw.annotate(env.gw.task_of(ls_id, "i0"), choice("pos"))
    t0 = time.perf_counter()
    assert client.post("/webhook", json=body, headers=HOOK).status_code == 200
    assert time.perf_counter() - t0 < 0.3
    services.dispatcher.join()
    assert slow_started and [e.item_id for e in env.store.labelled_examples(project.id)] == ["i0"]
    services.dispatcher.close()


# ---------------------------------------------------------------------------- projects API
def test_projects_api(web: SimpleNamespace) -> None:
    resp = web.client.post("/api/projects", json=cls_spec(), headers=AUTH)
    assert resp.status_code == 201
    p = resp.get_json()["project"]
    assert p["name"] == "sentiment" and p["labels"] == ["neg", "pos"] and p["integration"]["ls_project_id"]
    assert_error(web.client.post("/api/projects", json=cls_spec(), headers=AUTH), 409, "ConflictError")
    assert_error(web.client.post("/api/projects", json=cls_spec(name="x", bogus=1), headers=AUTH), 400, "ConfigError")
    assert_error(web.client.post("/api/projects", json=cls_spec(name="y", labels=["only"]), headers=AUTH), 422,
                 "SchemaError")
    assert_error(web.client.post("/api/projects", json=["not", "a", "spec"], headers=AUTH), 400)
    assert_error(web.client.post("/api/projects", headers=AUTH), 400)
    attach = web.client.post("/api/projects", json={"name": "z", "label_studio": {"project_id": 999}}, headers=AUTH)
    assert_error(attach, 404)
    web.gw.down = True
    down = web.client.post("/api/projects", json=cls_spec(name="w"), headers=AUTH)
    assert_error(down, 503, "LabelStudioUnavailable")
    assert down.headers["Retry-After"]
    web.gw.down = False
    listing = web.client.get("/api/projects", headers=AUTH).get_json()["projects"]
    assert [x["name"] for x in listing] == ["sentiment"]
    assert web.client.get(f"/api/projects/{p['id']}", headers=AUTH).get_json()["project"]["id"] == p["id"]
    assert_error(web.client.get("/api/projects/77", headers=AUTH), 404, "NotFoundError")


def test_items_api(project: SimpleNamespace, tmp_path: Path) -> None:
    web = project
    url = f"/api/projects/{web.pid}/items"
    again = web.client.post(url, json=[{"id": "i0", "text": "good item number 0"}], headers=AUTH)
    assert again.status_code == 200 and again.get_json()["existing"] == 1
    test = web.client.post(url, json={"split": "test", "items": [{"id": "t1", "text": "great test", "label": "pos"},
                                                                  {"id": "t2", "text": "bad test", "labels": ["neg"]}]},
                           headers=AUTH)
    assert test.status_code == 201 and test.get_json()["added"] == 2 and test.get_json()["ls_tasks"] == 0
    f = tmp_path / "more.jsonl"
    f.write_text('{"id": "f1", "text": "fine from a file"}\n{"id": "f2", "text": "poor from a file"}\n')
    from_file = web.client.post(url, json={"path": str(f), "format": "jsonl"}, headers=AUTH)
    assert from_file.status_code == 201 and from_file.get_json()["ls_tasks"] == 2
    assert_error(web.client.post(url, json=[{"id": "x"}], headers=AUTH), 400, "DataFormatError")
    assert_error(web.client.post(url, json=[{"id": "x", "text": "ok", "label": "meh"}], headers=AUTH), 422,
                 "UnknownLabelError")
    assert_error(web.client.post(url, json={"items": [], "surprise": 1}, headers=AUTH), 400, "ConfigError")
    assert_error(web.client.post(url, json={"path": str(tmp_path / "missing.jsonl")}, headers=AUTH), 400)
    assert_error(web.client.post(url, data="{oops", content_type="application/json", headers=AUTH), 400)
    assert_error(web.client.post("/api/projects/99/items", json=[], headers=AUTH), 404)


def test_items_api_body_limit_and_import_dirs(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    web = build(tmp_path, AL_LOOP_MAX_REQUEST_MB="1", AL_LOOP_IMPORT_DIRS=str(allowed))
    pid = web.loop.create_project(cls_spec()).id
    big = [{"id": f"b{i}", "text": "x" * 1000 + str(i)} for i in range(1100)]
    err = assert_error(web.client.post(f"/api/projects/{pid}/items", json=big, headers=AUTH), 413,
                       "RequestEntityTooLarge")
    assert "AL_LOOP_MAX_REQUEST_MB" in err["message"]
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"id": "o", "text": "outside"}\n')
    err = assert_error(web.client.post(f"/api/projects/{pid}/items", json={"path": str(outside)}, headers=AUTH), 400)
    assert "AL_LOOP_IMPORT_DIRS" in err["message"]


def test_rounds_api(project: SimpleNamespace) -> None:
    web = project
    url = f"/api/projects/{web.pid}/rounds"
    assert web.client.get(url, headers=AUTH).get_json() == {"rounds": []}
    resp = web.client.post(url, headers=AUTH)
    assert resp.status_code == 202
    r0 = resp.get_json()["round"]
    assert r0["index"] == 0 and r0["trigger"] == "api" and r0["status"] == "succeeded" and "report" not in r0
    one = web.client.get(f"{url}/0", headers=AUTH).get_json()
    assert one["round"]["report"]["push"]["imported"] == 20
    assert [s["rank"] for s in one["selected"]] == [0, 1, 2, 3, 4]
    assert_error(web.client.get(f"{url}/5", headers=AUTH), 404)
    assert_error(web.client.post(url, json={"batch_size": 0}, headers=AUTH), 400)
    pushed = web.client.post(f"{url}/0/push", headers=AUTH)
    assert pushed.status_code == 202 and pushed.get_json()["round"]["push_status"] == "done"
    web.rounds.create_round(web.pid)  # an active round
    assert_error(web.client.post(url, headers=AUTH), 409, "ConflictError")
    assert_error(web.client.post(f"{url}/1/push", headers=AUTH), 409)
    assert [r["index"] for r in web.client.get(url, headers=AUTH).get_json()["rounds"]] == [0, 1]
    assert_error(web.client.get("/api/projects/99/rounds", headers=AUTH), 404)


def test_push_api_with_label_studio_down_is_503(project: SimpleNamespace) -> None:
    web = project
    web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH)
    web.gw.down = True
    assert_error(web.client.post(f"/api/projects/{web.pid}/rounds/0/push", headers=AUTH), 503)


def test_versions_promote_rollback(project: SimpleNamespace) -> None:
    web = train_two_rounds(project)
    url = f"/api/projects/{web.pid}"
    assert_error(web.client.post(f"{url}/rollback", headers=AUTH), 409)  # only one version so far
    # one more round, so there is something to roll back to
    for s in web.store.get_scores(web.r1.id, selected_only=True):
        body = web.gw.annotate(web.gw.task_of(web.ls_id, s.item_id), choice(gold_label(s.item_id)))
        web.client.post("/webhook", json=body, headers=HOOK)
    web.client.post(f"{url}/rounds", headers=AUTH)
    versions = web.client.get(f"{url}/versions", headers=AUTH).get_json()["versions"]
    assert [v["status"] for v in versions] == ["archived", "promoted"]
    back = web.client.post(f"{url}/rollback", headers=AUTH)
    assert back.status_code == 200 and back.get_json()["version"]["id"] == versions[0]["id"]
    fwd = web.client.post(f"{url}/versions/{versions[1]['id']}/promote", headers=AUTH)
    assert fwd.status_code == 200 and fwd.get_json()["version"]["status"] == "promoted"
    assert_error(web.client.post(f"{url}/versions/9999/promote", headers=AUTH), 404)
    assert_error(web.client.get("/api/projects/99/versions", headers=AUTH), 404)


def test_status_and_reconcile(project: SimpleNamespace) -> None:
    web = project
    web.gw.annotate(web.gw.task_of(web.ls_id, "i0"), choice("pos"))  # webhook lost
    resp = web.client.post(f"/api/projects/{web.pid}/reconcile", headers=AUTH)
    assert resp.status_code == 202 and resp.get_json()["status"] == "queued"
    st = web.client.get(f"/api/projects/{web.pid}/status", headers=AUTH).get_json()
    assert st["labels"]["labelled"] == 1 and st["queue"]["last_reconcile"]["outcomes"]["created"] == 1
    assert st["items"]["pool"] == 20 and st["current_version"] is None and st["active_round"] is None
    assert_error(web.client.post("/api/projects/99/reconcile", headers=AUTH), 404)
    assert_error(web.client.get("/api/projects/99/status", headers=AUTH), 404)


# ---------------------------------------------------------------------------- error mapping
def test_unexpected_errors_are_generic_500_without_details(project: SimpleNamespace,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    web = project

    def crash(project_id: int) -> Any:
        raise RuntimeError("password=hunter2 in a stack frame")

    monkeypatch.setattr(web.loop, "status", crash)
    with caplog.at_level(logging.ERROR):
        resp = web.client.get(f"/api/projects/{web.pid}/status", headers=AUTH)
    err = assert_error(resp, 500, "InternalServerError")
    assert "hunter2" not in resp.get_data(as_text=True) and "RuntimeError" not in err["message"]
    assert "hunter2" in caplog.text  # the server log has the traceback


def test_unknown_routes_and_methods_are_json(web: SimpleNamespace) -> None:
    assert_error(web.client.get("/nope"), 404, "NotFound")
    assert_error(web.client.delete("/health"), 405, "MethodNotAllowed")
    assert_error(web.client.get("/api/projects/abc", headers=AUTH), 404)


def test_services_are_exposed_for_extensions(web: SimpleNamespace) -> None:
    services = web.app.extensions["al_loop"]
    assert services.settings is web.settings and services.store is web.store and services.loop is web.loop
    assert services.predictor is web.predictor and services.dispatcher is web.dispatcher


# ---------------------------------------------------------------------------- no torch in the web process
def test_web_process_never_imports_torch(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        from annotator_bridge.dispatch import InlineDispatcher
        from annotator_bridge.labelstudio.config import build_label_config
        from annotator_bridge.settings import Settings
        from annotator_bridge.web import create_app
        from al_loop.data.schema import LabelSchema
        from al_loop.types import Example, ItemId

        settings = Settings.from_env({{"AL_LOOP_HOME": {str(tmp_path)!r}, "AL_LOOP_API_TOKEN": "t",
                                       "AL_LOOP_WEBHOOK_SECRET": "s"}})
        app = create_app(settings, dispatcher=InlineDispatcher())
        store = app.extensions["al_loop"].store
        client = app.test_client()
        auth = {{"Authorization": "Bearer t"}}
        codes = {{}}
        codes["health"] = client.get("/health").status_code
        spec = {{"name": "local", "task": "classification", "labels": ["a", "b"], "label_studio": False,
                 "seed_size": 2}}
        codes["create"] = client.post("/api/projects", json=spec, headers=auth).status_code
        items = [{{"id": f"x{{i}}", "text": f"text number {{i}}"}} for i in range(6)]
        codes["items"] = client.post("/api/projects/1/items", json=items, headers=auth).status_code
        codes["round"] = client.post("/api/projects/1/rounds", headers=auth).status_code
        codes["status"] = client.get("/api/projects/1/status", headers=auth).status_code
        schema = LabelSchema.build("classification", ["a", "b"])
        p = store.create_project("linked", schema, ls_project_id=5,
                                 link={{"label_config": build_label_config(schema)}})
        store.add_items(p.id, [Example(ItemId("k1"), "some text")])
        store.set_ext_task_ids(p.id, {{"k1": 11}})
        codes["setup"] = client.post("/setup", json={{"project": "5.123"}}).status_code
        pred = client.post("/predict", json={{"project": "5.123", "tasks": [{{"id": 11, "data": {{"text": "x"}}}}]}})
        codes["predict"] = pred.status_code
        hook = {{"action": "ANNOTATION_CREATED", "project": {{"id": 5}},
                 "annotation": {{"id": 1, "task": 11, "updated_at": "2026-11-25T08:00:00Z", "completed_by": 1,
                                 "result": [{{"from_name": "label", "to_name": "text", "type": "choices",
                                              "value": {{"choices": ["a"]}}}}]}},
                 "task": {{"id": 11, "data": {{"text": "some text", "item_id": "k1"}}}}}}
        codes["webhook"] = client.post("/webhook", json=hook, headers={{"X-AL-Loop-Secret": "s"}}).status_code
        codes["labelled"] = len(store.labelled_examples(p.id))
        print(json.dumps({{"codes": codes, "torch": "torch" in sys.modules,
                          "transformers": "transformers" in sys.modules}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["codes"] == {"health": 200, "create": 201, "items": 201, "round": 202, "status": 200,
                               "setup": 200, "predict": 200, "webhook": 200, "labelled": 1}
    assert result["torch"] is False and result["transformers"] is False


def test_default_gateway_needs_label_studio_settings(tmp_path: Path) -> None:
    from annotator_bridge.labelstudio.gateway import LabelStudioGateway
    from annotator_bridge.loop import label_studio_gateway_factory
    from annotator_bridge.settings import Settings

    settings = Settings.from_env({"AL_LOOP_HOME": str(tmp_path), "AL_LOOP_API_TOKEN": TOKEN})
    client = create_app(settings).test_client()
    err = assert_error(client.post("/api/projects", json=cls_spec(), headers=AUTH), 400, "ConfigError")
    assert "LABEL_STUDIO_URL" in err["message"] and '"label_studio": false' in err["message"]
    configured = Settings.from_env({"AL_LOOP_HOME": str(tmp_path), "LABEL_STUDIO_URL": "http://127.0.0.1:1",
                                    "LABEL_STUDIO_API_KEY": "k"})
    gw = label_studio_gateway_factory(configured)()
    assert isinstance(gw, LabelStudioGateway) and gw.url == "http://127.0.0.1:1"
    gw.close()


# ---------------------------------------------------------------------------- al-loop serve's app
def _serve_settings(tmp_path: Path, **extra: str) -> Any:
    from annotator_bridge.settings import Settings

    settings = Settings.from_env({"AL_LOOP_HOME": str(tmp_path / "home"), "AL_LOOP_API_TOKEN": TOKEN,
                                  "AL_LOOP_WEBHOOK_SECRET": SECRET, **extra})
    settings.ensure_dirs()
    return settings


def test_serve_warms_up_so_the_first_webhook_reads_no_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from al_loop.store import Store
    from annotator_bridge.commands.serve import build_web_app, warm_up

    settings = _serve_settings(tmp_path)
    store = Store(settings.database_url)
    (tmp_path / "spec").mkdir()
    env = make_env(tmp_path / "spec")  # a Label Studio fake and its webhook bodies
    project = env.loop.create_project(cls_spec())
    env.loop.import_items(project.id, cls_items(3))
    ls_id = env.store.get_link(project.id).ls_project_id
    schema, loop_cfg, training = project.schema, project.loop, project.training
    mine = store.create_project("served", schema, "default", loop_cfg, training, ls_project_id=ls_id,
                                link={"attached": True})
    store.dispose()
    app = build_web_app(settings)  # warms up
    services = app.extensions["al_loop"]
    lookups: list[int] = []
    monkeypatch.setattr(services.store, "find_link", lambda ls: lookups.append(ls))
    body = env.gw.annotate(env.gw.task_of(ls_id, "i0"), choice("pos"))
    resp = app.test_client().post("/webhook", json=body, headers=HOOK)
    assert resp.status_code == 200 and resp.get_json()["project_id"] == mine.id
    assert lookups == []  # the link was read at start-up
    assert warm_up(app) == []
    services.dispatcher.close()


def test_serve_starts_when_the_broker_is_down(tmp_path: Path) -> None:
    from annotator_bridge.commands.serve import build_web_app, warm_up
    from tests.bridge.conftest_services import free_port

    settings = _serve_settings(tmp_path, AL_LOOP_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    app = build_web_app(settings)  # the warm-up's failures are logged, never raised
    assert warm_up(app) == ["broker", "ingest list"]
    assert app.test_client().get("/health").status_code == 200
    app.extensions["al_loop"].dispatcher.close()


@pytest.mark.parametrize(("level", "verbose", "expected"), [("INFO", False, logging.INFO),
                                                            ("WARNING", False, logging.WARNING),
                                                            ("ERROR", True, logging.DEBUG)])
def test_serve_takes_its_log_level_from_the_settings(tmp_path: Path, level: str, verbose: bool,
                                                     expected: int) -> None:
    from annotator_bridge.commands.serve import apply_log_level

    root, access = logging.getLogger(), logging.getLogger("werkzeug")
    before = root.level, access.level
    access.setLevel(logging.INFO)  # what werkzeug sets on its first record
    try:
        assert apply_log_level(_serve_settings(tmp_path, AL_LOOP_LOG_LEVEL=level), verbose) == expected
        assert root.level == expected
        assert logging.getLogger("werkzeug").isEnabledFor(logging.INFO) == (expected <= logging.INFO)  # access log
    finally:
        root.setLevel(before[0])
        access.setLevel(before[1])
