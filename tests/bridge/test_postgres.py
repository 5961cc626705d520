"""al-loop on a real PostgreSQL server (tests/postgres_server.py) as well as SQLite.

- The API's column limits: oversized names, item ids (request body and server file), NUL in a file's text,
  oversized webhook values: a clear 4xx on both databases, never a database error (SQLite alone would
  have stored them).
- The live loop with real processes (``integration``): ``al-loop serve`` and both Celery workers pointed
  at one PostgreSQL database (each upgrades it on start, at once), webhooks ingested by the default
  worker's threads concurrently, a real MiniLM round on the train queue (``slow``).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine

from al_loop.store import Store
from al_loop.store.limits import MAX_ITEM_ID
from al_loop.store.schema import current_revision, head_revision
from tests.bridge import conftest_services, test_loop
from tests.bridge.conftest_services import (
    TEST_API_TOKEN,
    TEST_WEBHOOK_SECRET,
    WORKER_DEFAULT_ARGS,
    WORKER_TRAIN_ARGS,
    ALProcess,
    al_loop_env,
    start_server,
    start_worker,
    wait_until,
)
from tests.bridge.test_loop import cls_spec
from tests.bridge.test_web import AUTH, HOOK, assert_error, build
from tests.postgres_server import PostgresServer

redis_server = conftest_services.redis_server  # session fixture: a real redis-server on a free port


@pytest.fixture
def web(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The Flask app (test client) over a store on ``database_url``: SQLite, then PostgreSQL."""
    monkeypatch.setattr(test_loop, "Store", lambda _url: Store(database_url))
    env = build(tmp_path, AL_LOOP_IMPORT_DIRS=str(tmp_path))
    resp = env.client.post("/api/projects", json=cls_spec(), headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    env.pid = resp.get_json()["project"]["id"]
    env.ls_id = resp.get_json()["project"]["integration"]["ls_project_id"]
    assert env.store.engine.url.render_as_string() == database_url
    return env


def _items(web: SimpleNamespace, body: Any) -> Any:
    return web.client.post(f"/api/projects/{web.pid}/items", json=body, headers=AUTH)


def test_oversized_project_fields_are_400(web: SimpleNamespace) -> None:
    assert "200 characters" in assert_error(web.client.post("/api/projects", json=cls_spec(name="n" * 201),
                                                            headers=AUTH), 400)["message"]
    assert "500 characters" in assert_error(web.client.post("/api/projects", json=cls_spec(name="q",
                                                            base_model="m" * 501), headers=AUTH), 400)["message"]
    assert [p.name for p in web.store.list_projects()] == ["sentiment"]


def test_item_ids_past_the_column_are_400_in_the_body_and_in_files(web: SimpleNamespace, tmp_path: Path) -> None:
    err = assert_error(_items(web, [{"id": "ok", "text": "fine"}, {"id": "x" * 5000, "text": "long id"}]), 400)
    assert f"at most {MAX_ITEM_ID}" in err["message"] and "x" * 300 not in err["message"]
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "first"}) + "\n" + json.dumps({"id": "y" * 5000, "text": "b"}))
    err = assert_error(_items(web, {"path": str(path)}), 400, "DataFormatError")
    assert f"{path}:2" in err["message"] and "5000 characters" in err["message"] and "yyyy" not in err["message"]
    path.write_text(json.dumps({"id": "a", "text": "nul \u0000 inside"}) + "\n")
    err = assert_error(_items(web, {"path": str(path)}), 400, "DataFormatError")
    assert "NUL" in err["message"]
    assert web.store.count_items(web.pid) == 0
    ok = _items(web, [{"id": "i" * MAX_ITEM_ID, "text": "at the limit"}])
    assert ok.status_code == 201, ok.get_json()


def test_oversized_webhook_values_are_4xx_and_store_nothing(web: SimpleNamespace) -> None:
    _items(web, [{"id": "a", "text": "some text"}])
    ls = web.ls_id
    for body in (
        {"action": "TASKS_CREATED", "project": {"id": ls}, "tasks": [{"id": 3, "data": {"item_id": "x" * 5000}}]},
        {"action": "ANNOTATION_CREATED", "project": {"id": ls}, "annotation": {"id": 2**31, "task": 1}},
        {"action": "ANNOTATION_CREATED", "project": {"id": ls},
         "annotation": {"id": 1, "task": 1, "updated_at": "x" * 65}},
    ):
        resp = web.client.post("/webhook", json=body, headers=HOOK)
        assert 400 <= resp.status_code < 500, resp.get_data(as_text=True)
    assert web.store.label_records(web.pid) == [] and web.store.count_rejected(web.pid) == 0


# ------------------------------------------------------------------------------- live loop
def _get_ok(url: str, headers: dict[str, str]) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
        assert resp.status == 200, url
        return str(resp.read().decode())


def _monitoring_answers(base: str, pid: int) -> None:
    """The status API, the dashboard (page, data, a round) and /metrics read PostgreSQL (aggregates, JSON)."""
    auth = {"Authorization": f"Bearer {TEST_API_TOKEN}"}
    status = json.loads(_get_ok(f"{base}/api/projects/{pid}/status", auth))
    assert status, status
    for path in (f"/dashboard/{pid}", f"/dashboard/{pid}/data.json", "/metrics"):
        _get_ok(base + path, auth)


def _post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def pg_stack(postgres_server: PostgresServer, redis_server: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``al-loop serve`` + both workers on one new PostgreSQL database, started at once (each upgrades it)."""
    home = tmp_path_factory.mktemp("pg-stack")
    url = postgres_server.new_database("stack")
    env = al_loop_env(home, redis_server.url_for(7), AL_LOOP_DATABASE_URL=url, AL_LOOP_VISIBILITY_TIMEOUT="60")
    procs: list[ALProcess] = []
    started: dict[str, Any] = {}

    def start(name: str, args: tuple[str, ...]) -> None:
        started[name] = start_worker(args, env, home / "logs" / f"{name}.log")

    threads = [threading.Thread(target=start, args=("default", WORKER_DEFAULT_ARGS)),
               threading.Thread(target=start, args=("train", WORKER_TRAIN_ARGS))]
    for t in threads:
        t.start()
    try:
        server, base = start_server(env, home / "logs" / "serve.log")
        procs.append(server)
        for t in threads:
            t.join()
        procs += [started[n] for n in ("default", "train") if n in started]
        assert set(started) == {"default", "train"}, "a worker did not start (see its log)"
        store = Store(url)
        yield SimpleNamespace(url=url, base=base, store=store, env=env, procs=procs, home=home)
        store.dispose()
    finally:
        for t in threads:
            t.join()
        for p in procs + [w for w in started.values() if w not in procs]:
            p.stop()


@pytest.mark.integration
def test_serve_and_workers_share_one_postgresql_database(pg_stack: Any, shared_data: Path) -> None:
    stack = pg_stack
    assert current_revision(stack.store.engine) == head_revision()  # three processes migrated it once, together
    auth = {"Authorization": f"Bearer {TEST_API_TOKEN}"}
    status, body = _post(f"{stack.base}/api/projects", cls_spec(name="pg", label_studio=False), auth)
    assert status == 201, body
    pid = body["project"]["id"]
    status, body = _post(f"{stack.base}/api/projects/{pid}/items", [{"id": "z" * 5000, "text": "t"}], auth)
    assert status == 400 and "at most 200" in body["error"]["message"], body
    texts = [f"item {i} is {'good' if i % 2 else 'bad'} and plain" for i in range(30)]
    status, body = _post(f"{stack.base}/api/projects/{pid}/items",
                         [{"id": f"i{i}", "text": t} for i, t in enumerate(texts)], auth)
    assert status == 201, body
    # 40 webhooks for the same project at once: labels and rejections through the default worker's threads
    items = stack.store.get_items(pid)
    events = []
    for n in range(40):
        label = ("pos" if n % 2 else "neg") if n < 20 else f"BAD{n}"
        item = items[n % len(items)]
        events.append({"action": "ANNOTATION_CREATED", "project": {"id": 999},
                       "annotation": {"id": 100 + n, "task": 1000 + n, "was_cancelled": False, "completed_by": 1,
                                      "updated_at": "2026-11-25T10:00:00.000000Z",
                                      "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                                  "value": {"choices": [label]}}]},
                       "task": {"id": 1000 + n, "data": {"text": item.text, "item_id": item.item_id}}})
    from annotator_bridge.settings import Settings
    from annotator_bridge.worker.celery_app import make_celery
    from annotator_bridge.worker.dispatcher import CeleryDispatcher

    dispatcher = CeleryDispatcher(make_celery(Settings.from_env(stack.env)))
    try:
        for ev in events:
            dispatcher.ingest_event(pid, ev)
        try:
            wait_until(lambda: stack.store.count_rejected(pid) == 20 and len(stack.store.label_records(pid)) == 20,
                       90, 0.1, "20 labels and 20 rejections in PostgreSQL")
        except TimeoutError:
            raise AssertionError(f"{stack.store.count_rejected(pid)} rejections, {len(stack.store.label_records(pid))} "
                                 f"labels; default worker:\n{stack.procs[1].log()[-4000:]}") from None
    finally:
        dispatcher.close()
    assert len(stack.store.labelled_examples(pid)) == 20
    _monitoring_answers(stack.base, pid)
    headers = {"X-AL-Loop-Secret": TEST_WEBHOOK_SECRET}
    status, _ = _post(f"{stack.base}/webhook", {"action": "TASKS_CREATED", "project": {"id": 1},
                                                "tasks": [{"id": 3, "data": {"item_id": "x" * 5000}}]}, headers)
    assert 400 <= status < 500


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_round_on_the_train_worker_writes_to_postgresql(pg_stack: Any, shared_data: Path) -> None:
    from al_loop.data.readers import dedupe_examples, read_examples
    from al_loop.types import TaskKind

    stack = pg_stack
    examples, _ = dedupe_examples(read_examples(shared_data / "trec" / "TREC.train", task=TaskKind.CLASSIFICATION,
                                                format="trec"))
    data = examples[200:272]
    labels = sorted({lb for ex in data for lb in (ex.labels or ())})
    auth = {"Authorization": f"Bearer {TEST_API_TOKEN}"}
    status, body = _post(f"{stack.base}/api/projects", {
        "name": "pg-round", "task": "classification", "labels": labels, "label_studio": False,
        "training": {"max_length": 64, "min_epochs": 1, "max_epochs": 1, "target_steps": 4, "batch_size": 8,
                     "val_fraction": 0.0},
        "loop": {"strategy": "least_confidence", "batch_size": 8, "seed_size": 8, "retrain_every": 0}}, auth)
    assert status == 201, body
    pid = body["project"]["id"]
    gold = [{"id": ex.item_id, "text": ex.text, "label": ex.labels[0]} for ex in data[:32]]
    status, body = _post(f"{stack.base}/api/projects/{pid}/items", {"items": gold, "record_labels": True}, auth)
    assert status == 201, body
    pool = [{"id": ex.item_id, "text": ex.text} for ex in data[32:]]
    assert _post(f"{stack.base}/api/projects/{pid}/items", pool, auth)[0] == 201
    status, body = _post(f"{stack.base}/api/projects/{pid}/rounds", {}, auth)
    assert status in (200, 201, 202), body
    rid = body["round"]["id"]
    t0 = time.monotonic()

    def finished() -> Any:
        for p in stack.procs:
            if not p.alive():
                raise AssertionError(f"{p.args} died:\n{p.log()[-3000:]}")
        rnd = stack.store.get_round(rid)
        return rnd if rnd.status in ("succeeded", "failed", "cancelled") else None

    rnd = wait_until(finished, 300, 0.5, "the round to finish")
    assert rnd.status == "succeeded", rnd.error
    print(f"\n[postgres] round with real MiniLM on PostgreSQL: {time.monotonic() - t0:.1f} s, {rnd.timings}")
    assert rnd.model_version_id is not None and len(stack.store.get_scores(rid)) == 40
    assert sum(s.selected for s in stack.store.get_scores(rid)) == 8
    assert stack.store.list_versions(pid)[0].status in ("promoted", "candidate")
    _monitoring_answers(stack.base, pid)
    _get_ok(f"{stack.base}/dashboard/{pid}/rounds/{rid}", {"Authorization": f"Bearer {TEST_API_TOKEN}"})
    assert {i.item_id for i in stack.store.get_items(pid)} >= {p["id"] for p in pool}


@pytest.mark.parametrize(
    "args",
    [("status",), ("serve", "--server", "werkzeug", "--port", "0"), ("serve", "--server", "gunicorn", "--port", "0")],
)
def test_processes_refuse_a_database_from_a_newer_al_loop(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A clear one-line refusal, no traceback, and the database left as it was."""
    import subprocess

    from tests.bridge.conftest_services import al_loop_command

    url = f"sqlite:///{tmp_path / 'newer.db'}"
    Store(url).dispose()
    engine = Store(url).engine
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00dcafe'")
    engine.dispose()
    env = al_loop_env(tmp_path / "home", "", AL_LOOP_DATABASE_URL=url)
    del env["AL_LOOP_BROKER_URL"]
    res = subprocess.run(al_loop_command(*args), env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "written by a newer al-loop" in res.stderr and "Traceback" not in res.stderr + res.stdout, res.stderr
    assert current_revision(create_engine(url)) == "f00dcafe"
