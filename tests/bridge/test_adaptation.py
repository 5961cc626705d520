"""Pool-adaptive pretraining in the live loop (annotator_bridge/loop/adaptation.py) with a fake adapter: the pool
sample, progress rows, done / failed with a message, rounds from the adapted folder (recorded in the manifest), the
automatic adaptation before a project's first round, ``POST /api/projects/<id>/adapt`` (202 / 409 / 404 / 400),
the status API, the dashboard, ``al-loop status`` and the Celery routing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from al_loop.data.schema import LabelSchema
from al_loop.errors import ConflictError, EmptyInputError
from al_loop.states import AdaptStatus, RoundStatus
from al_loop.store.adaptations import create_adaptation, latest_adaptation, update_adaptation
from al_loop.types import Example, ItemId
from annotator_bridge import monitoring
from annotator_bridge.commands.status import render_project
from annotator_bridge.loop.adaptation import pool_texts
from tests.bridge.test_hostile_input import QueueOnly
from tests.bridge.test_loop import cls_items, cls_spec
from tests.bridge.test_web import AUTH, assert_error, build
from tests.core.fakes import FakeModel


class FakeAdapter:
    """``adapt_encoder``'s signature: records the call, reports every step, writes a folder with a config.json."""

    def __init__(self, web: SimpleNamespace, fail: Exception | None = None) -> None:
        self.web = web
        self.fail = fail
        self.calls: list[dict[str, Any]] = []
        self.seen_steps: list[int] = []  # the row's steps_done after each progress call

    def __call__(self, base: str, texts: list[str], cache_root: Path, budget: Any, **kw: Any) -> Any:
        self.calls.append({"base": base, "texts": list(texts), "cache_root": Path(cache_root), "budget": budget, **kw})
        if self.fail is not None:
            raise self.fail
        for step in range(1, budget.max_steps + 1):
            kw["progress"](step, budget.max_steps, 10.0 - step)
            row = latest_adaptation(self.web.store, self.web.pid)
            assert row is not None and row.status is AdaptStatus.RUNNING
            self.seen_steps.append(row.steps_done)
        folder = Path(cache_root) / "mlm-fake"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text("{}")
        return SimpleNamespace(folder=folder, steps=budget.max_steps, seconds=1.5, texts=len(texts), loss_first=9.0,
                               loss_last=10.0 - budget.max_steps, cached=False)


def _web(tmp_path: Path, *, adapt_pool: bool = False, steps: int = 5, fail: Exception | None = None,
         items: int = 20) -> SimpleNamespace:
    web = build(tmp_path)
    loop = {"adapt_pool": adapt_pool, "adapt_steps": steps, "adapt_minutes": 1, "adapt_texts": 12}
    resp = web.client.post("/api/projects", json=cls_spec(loop=loop), headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    web.pid = resp.get_json()["project"]["id"]
    web.ls_id = resp.get_json()["project"]["integration"]["ls_project_id"]
    if items:
        web.loop.import_items(web.pid, cls_items(items))
    web.adapter = FakeAdapter(web, fail)
    web.loop.adaptation.adapter = web.adapter
    ticks = iter(range(10_000))
    web.loop.adaptation._monotonic = lambda: next(ticks) * 0.4  # 0.4 s per step: every third step is written
    return web


def test_pool_texts_are_the_unlabelled_pool_bounded_by_a_seeded_sample(tmp_path: Path) -> None:
    web = _web(tmp_path)
    store, pid = web.store, web.pid
    store.record_label(pid, ItemId("i0"), "ls:1", payload={"labels": ["pos"]}, source="ls")
    everything = pool_texts(store, pid, 1000, seed=1, chunk=3)
    assert len(everything) == 19 and all(t for t in everything)
    assert store.get_items(pid, ["i0"])[0].text not in everything  # labelled: not in the pool
    sample = pool_texts(store, pid, 7, seed=1, chunk=3)
    assert len(sample) == 7 and set(sample) <= set(everything)
    assert sample == pool_texts(store, pid, 7, seed=1, chunk=5) == pool_texts(store, pid, 7, seed=1)
    assert [t for t in everything if t in sample] == sample  # pool order kept
    assert pool_texts(store, pid, 7, seed=2) != sample


def test_adapt_route_runs_it_and_rounds_start_from_the_adapted_folder(tmp_path: Path) -> None:
    web = _web(tmp_path)
    resp = web.client.post(f"/api/projects/{web.pid}/adapt", headers=AUTH)
    assert resp.status_code == 202, resp.get_json()
    a = resp.get_json()["adaptation"]  # the inline dispatcher ran it in the request
    assert a["status"] == "done" and a["steps_done"] == a["steps_total"] == 5 and a["progress"] == 1.0
    assert a["loss"] == 5.0 and a["texts"] == 12 and a["key"] == "mlm-fake" and a["error"] is None
    call = web.adapter.calls[0]
    assert call["base"] == "default" and len(call["texts"]) == 12
    assert call["cache_root"] == web.rounds.artifacts_root / f"project-{web.pid}" / "adapted"
    assert (call["budget"].max_steps, call["budget"].max_seconds, call["budget"].max_texts) == (5, 60.0, 12)
    assert web.adapter.seen_steps == [1, 1, 1, 4, 5]  # throttled (0.4 s a step, >= 1 s apart), last one written

    FakeModel.created.clear()
    rnd = web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH).get_json()["round"]
    assert web.store.get_round(rnd["id"]).status is RoundStatus.SUCCEEDED
    assert web.adapter.calls[1:] == []  # not adapted again
    # a cold round trains nothing; label its batch and train
    for s in web.store.get_scores(rnd["id"], selected_only=True):
        web.store.record_label(web.pid, s.item_id, f"ls:{s.item_id}", payload={"labels": ["pos"]}, source="ls")
    web.store.record_label(web.pid, ItemId("i1"), "ls:x1", payload={"labels": ["neg"]}, source="ls")
    FakeModel.created.clear()
    rnd = web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH).get_json()["round"]
    done = web.store.get_round(rnd["id"])
    assert done.status is RoundStatus.SUCCEEDED, done.error
    assert {m.base_model for m in FakeModel.created} == {a["folder"]}
    version = web.store.get_version(done.model_version_id)
    assert version.base_model == "default"
    manifest = json.loads((Path(version.artifact_path) / "manifest.json").read_text())
    assert manifest["adapted_base"] == {"folder": a["folder"], "key": "mlm-fake", "steps": 5, "adaptation": a["id"]}
    status = web.client.get(f"/api/projects/{web.pid}/status", headers=AUTH).get_json()["adaptation"]
    assert status["status"] == "done" and status["in_use"] and status["enabled"] is False


def test_a_project_with_adapt_pool_adapts_before_its_first_round(tmp_path: Path) -> None:
    web = _web(tmp_path, adapt_pool=True, steps=3)
    status = web.client.get(f"/api/projects/{web.pid}/status", headers=AUTH).get_json()["adaptation"]
    assert status["enabled"] and status["status"] is None and status["steps_total"] == 3
    FakeModel.created.clear()
    r0 = web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH)
    assert r0.status_code == 202, r0.get_json()
    assert len(web.adapter.calls) == 1
    a = latest_adaptation(web.store, web.pid)
    assert a is not None and a.status is AdaptStatus.DONE and a.steps_done == 3
    assert web.store.get_round(r0.get_json()["round"]["id"]).status is RoundStatus.SUCCEEDED
    web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH)
    assert len(web.adapter.calls) == 1  # once per project
    assert web.client.post(f"/api/projects/{web.pid}/adapt", headers=AUTH).status_code == 202  # again on demand
    assert len(web.adapter.calls) == 2


@pytest.mark.parametrize(("error", "message"), [
    (EmptyInputError("pool-adaptive pretraining needs at least one non-blank text"), "at least one non-blank"),
    (RuntimeError("CUDA out of memory at /secret/path"), "internal error (RuntimeError); see the worker's log"),
])
def test_a_failure_is_recorded_and_rounds_use_the_base_model(tmp_path: Path, error: Exception, message: str) -> None:
    web = _web(tmp_path, adapt_pool=True, fail=error)
    FakeModel.created.clear()
    resp = web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH)
    assert resp.status_code == 202
    assert web.store.get_round(resp.get_json()["round"]["id"]).status is RoundStatus.SUCCEEDED
    a = latest_adaptation(web.store, web.pid)
    assert a is not None and a.status is AdaptStatus.FAILED and message in (a.error or "")
    assert "secret" not in (a.error or "") and "Traceback" not in (a.error or "")
    assert all(m.base_model == "default" for m in FakeModel.created)
    web.client.post(f"/api/projects/{web.pid}/rounds", headers=AUTH)
    assert len(web.adapter.calls) == 1  # a failed adaptation is not retried by every round (POST .../adapt is)
    status = web.client.get(f"/api/projects/{web.pid}/status", headers=AUTH).get_json()["adaptation"]
    assert status["status"] == "failed" and message in status["error"] and not status["in_use"]
    text = render_project(monitoring.project_snapshot(web.store, web.pid))
    assert "pool adaptation: FAILED" in text and message in text
    html = web.client.get(f"/dashboard/{web.pid}").get_data(as_text=True)
    assert 'id="adaptation"' in html and "failed" in html


def test_an_empty_pool_fails_with_a_message(tmp_path: Path) -> None:
    web = _web(tmp_path, items=0)
    a = web.client.post(f"/api/projects/{web.pid}/adapt", headers=AUTH).get_json()["adaptation"]
    assert a["status"] == "failed" and "no unlabelled texts" in a["error"]
    assert web.adapter.calls == []


def test_a_source_models_encoder_is_adapted(tmp_path: Path) -> None:
    web = _web(tmp_path)
    artifact = tmp_path / "source-artifact"
    artifact.mkdir()
    schema = LabelSchema.build("classification", ["pos", "neg"])
    web.store.add_version(web.pid, name="al-r001-abcd1234", round_id=None, base_model="default", schema=schema,
                          metrics={}, train_report={}, artifact_path=str(artifact))
    resp = web.client.post("/api/projects", json=cls_spec(name="target",
                                                          base_model={"project": web.pid,
                                                                      "version": "al-r001-abcd1234"}), headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    target = resp.get_json()["project"]["id"]
    web.loop.import_items(target, [Example(ItemId(f"t{i}"), f"target text {i}") for i in range(5)])
    web.pid = target
    a = web.client.post(f"/api/projects/{target}/adapt", headers=AUTH).get_json()["adaptation"]
    assert a["status"] == "done" and a["base_model"] == resp.get_json()["project"]["base_model"]
    assert web.adapter.calls[-1]["base"] == str(artifact)  # the resolved version's folder


def test_the_route_answers_409_404_and_400(tmp_path: Path) -> None:
    web = _web(tmp_path)
    queue = QueueOnly()
    web.loop.dispatcher = queue
    web.app.extensions["al_loop"].dispatcher = queue
    first = web.client.post(f"/api/projects/{web.pid}/adapt", headers=AUTH, json={})
    assert first.status_code == 202 and first.get_json()["adaptation"]["status"] == "pending"
    assert queue.calls == [("run_adaptation", (first.get_json()["adaptation"]["id"],))]
    assert "pending" in assert_error(web.client.post(f"/api/projects/{web.pid}/adapt", headers=AUTH), 409)["message"]
    assert_error(web.client.post("/api/projects/999/adapt", headers=AUTH), 404)
    assert_error(web.client.post(f"/api/projects/{web.pid}/adapt", headers=AUTH, json={"steps": 3}), 400)
    assert web.client.post(f"/api/projects/{web.pid}/adapt").status_code == 401
    for loop in ({"adapt_steps": 0}, {"adapt_pool": "yes"}, {"adapt_minutes": 0.01}, {"adapt_texts": -1}):
        bad = web.client.post("/api/projects", json=cls_spec(name="bad", loop=loop), headers=AUTH)
        assert "adapt_" in assert_error(bad, 400)["message"]
    # the queued task runs it; a redelivery finds it done and leaves it
    web.loop.execute_adaptation(first.get_json()["adaptation"]["id"])
    again = web.loop.execute_adaptation(first.get_json()["adaptation"]["id"])
    assert again.status is AdaptStatus.DONE and len(web.adapter.calls) == 1


def test_a_round_waits_while_another_worker_adapts(tmp_path: Path) -> None:
    web = _web(tmp_path, adapt_pool=True)
    running = create_adaptation(web.store, web.pid, "default", 5)
    update_adaptation(web.store, running.id, status=AdaptStatus.RUNNING, steps_done=2)
    with pytest.raises(ConflictError):  # the Celery round task retries it later
        web.loop.request_round(web.pid, "api")
    assert web.adapter.calls == []
    assert all(r.status is RoundStatus.CANCELLED for r in web.store.list_rounds(web.pid))
    text = render_project(monitoring.project_snapshot(web.store, web.pid))
    assert "pool adaptation: running, 2/5 steps" in text


def test_the_celery_dispatcher_sends_it_to_the_train_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from annotator_bridge.settings import Settings
    from annotator_bridge.worker.celery_app import make_celery
    from annotator_bridge.worker.config import ADAPT_TASK
    from annotator_bridge.worker.dispatcher import CeleryDispatcher

    settings = Settings.from_env({"AL_LOOP_HOME": str(tmp_path), "AL_LOOP_TRAIN_QUEUE": "gpu0"})
    app = make_celery(settings)
    assert app.conf.task_routes[ADAPT_TASK]["queue"] == "gpu0"
    sent: list[tuple[list[Any], str]] = []
    monkeypatch.setattr(app.tasks[ADAPT_TASK], "apply_async",
                        lambda args, queue, routing_key: sent.append((args, queue)))
    CeleryDispatcher(app).run_adaptation(7)
    assert sent == [([7], "gpu0")]


@pytest.mark.slow
def test_the_real_adapter_through_the_inline_dispatcher(tmp_path: Path) -> None:
    """adapt_encoder at a 2-step budget on the default MiniLM, before the first round of an adapt_pool project; the
    next round's head learner reads its features from the adapted encoder (the manifest says which)."""
    from al_loop.models.adapt import read_adapt_manifest
    from al_loop.rounds import RoundService
    from al_loop.store import Store
    from annotator_bridge.dispatch import InlineDispatcher
    from annotator_bridge.loop import LoopService
    from annotator_bridge.settings import Settings
    from tests.bridge.test_loop import FakeGateway

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    rounds = RoundService(store, None, tmp_path / "artifacts")
    gw = FakeGateway()
    settings = Settings.from_env({"AL_LOOP_HOME": str(tmp_path)})
    loop = LoopService(store, lambda: gw, rounds, InlineDispatcher(), settings)
    spec = cls_spec(loop={"adapt_pool": True, "adapt_steps": 2, "adapt_texts": 16},
                    training={"learner": "head", "max_length": 32, "device": "cpu"}, label_studio=None)
    project = loop.create_project(spec)
    loop.import_items(project.id, cls_items(20))
    r0 = loop.request_round(project.id, "api")
    assert r0.status is RoundStatus.SUCCEEDED, r0.error
    a = latest_adaptation(store, project.id)
    assert a is not None and a.status is AdaptStatus.DONE, a and a.error
    assert a.steps_done == 2 and a.texts > 0 and a.loss is not None and a.folder and a.key
    manifest = read_adapt_manifest(a.folder)
    assert manifest is not None and manifest["steps"] == 2 and manifest["key"] == a.key
    for s in store.get_scores(r0.id, selected_only=True):
        label = "pos" if int(s.item_id[1:]) % 2 else "neg"
        store.record_label(project.id, s.item_id, f"ls:{s.item_id}", payload={"labels": [label]}, source="ls")
    r1 = loop.request_round(project.id, "api")
    assert r1.status is RoundStatus.SUCCEEDED, r1.error
    version = store.get_version(r1.model_version_id)
    saved = json.loads((Path(version.artifact_path) / "manifest.json").read_text())["extra"]
    assert saved["adapted_base"]["folder"] == a.folder and saved["adapted_base"]["steps"] == 2
    store.dispose()
