"""Prometheus /metrics of the real app factory, on real rounds (word-vote model)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

import al_loop.rounds  # noqa: F401  (import the rounds package before the store)
from al_loop.store import Store
from annotator_bridge.monitoring import StaticQueueProbe
from annotator_bridge.settings import Settings
from annotator_bridge.web import create_app
from annotator_bridge.web.context import set_queue_probe
from annotator_bridge.web.metrics import count_labels, observe_webhook, scrape
from tests.bridge.monitoring_data import build_live_project

TOKEN = "metrics-test-token"


def _settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", broker_url="filesystem://",
                    artifacts_dir=tmp_path / "art", api_token=TOKEN)


@pytest.fixture
def served(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    live = build_live_project(store, tmp_path / "art", rounds=3)
    app = create_app(_settings(tmp_path), store=store)
    return app, live


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, metric: str, /, **labels: str) -> float:
    return samples(text)[(metric, tuple(sorted(labels.items())))]


def test_metrics_read_rounds_labels_and_scores_from_the_store(served) -> None:
    app, live = served
    store, pid = live.store, str(live.project_id)
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200 and resp.content_type.startswith("text/plain")
    text = resp.get_data(as_text=True)
    assert value(text, "al_loop_store_up") == 1
    assert value(text, "al_loop_project_info", project=pid, name="reviews", task="classification") == 1
    assert value(text, "al_loop_rounds_started_total", project=pid) == 3
    assert value(text, "al_loop_rounds_finished_total", project=pid, status="succeeded") == 3
    assert value(text, "al_loop_rounds_failed_total", project=pid) == 0
    assert value(text, "al_loop_round_active", project=pid, status="running") == 0
    # round duration by phase: a histogram over finished rounds
    rounds = store.list_rounds(live.project_id)
    assert value(text, "al_loop_round_duration_seconds_count", project=pid, phase="total") == 3
    assert value(text, "al_loop_round_duration_seconds_sum", project=pid, phase="total") == pytest.approx(
        sum(r.timings["total"] for r in rounds))
    assert value(text, "al_loop_round_duration_seconds_count", project=pid, phase="train") == 2  # round 0: no training
    assert value(text, "al_loop_round_last_duration_seconds", project=pid, phase="train") == rounds[-1].timings["train"]
    # labels ingested: every annotation row; labelled items: live non-skipped
    assert value(text, "al_loop_labels_ingested_total", project=pid, source="labelstudio") == 18
    assert value(text, "al_loop_labelled_items", project=pid) == 18
    # the current metric per project
    promoted = store.promoted_version(live.project_id)
    assert value(text, "al_loop_model_score", project=pid, version=promoted.name) == promoted.metrics["score"]
    assert value(text, "al_loop_round_score", project=pid) == rounds[-1].metrics["score"]
    assert value(text, "al_loop_items", project=pid, split="pool") == 80
    # no probe configured: queue depth unknown
    assert value(text, "al_loop_queue_probe_up") == 0 and value(text, "al_loop_workers") == 0


def test_metrics_follow_a_running_then_failed_round(served) -> None:
    app, live = served
    store, pid = live.store, str(live.project_id)
    rnd = live.service.create_round(live.project_id, trigger="api")
    store.claim_round(rnd.id, "w1", timedelta(minutes=10))
    store.update_round(rnd.id, phase="train", progress=0.25)
    text = scrape(app)
    assert value(text, "al_loop_round_active", project=pid, status="running") == 1
    assert value(text, "al_loop_round_progress", project=pid, phase="train") == 0.25
    assert 0 <= value(text, "al_loop_round_heartbeat_age_seconds", project=pid) < 60
    assert value(text, "al_loop_rounds_started_total", project=pid) == 4
    store.update_round(rnd.id, status="failed", error="GPU on fire", phase="done")
    text = scrape(app)
    assert value(text, "al_loop_rounds_failed_total", project=pid) == 1
    assert value(text, "al_loop_rounds_finished_total", project=pid, status="failed") == 1
    assert value(text, "al_loop_round_active", project=pid, status="running") == 0


def test_queue_probe_feeds_queue_depth(served) -> None:
    app, _ = served
    set_queue_probe(app, StaticQueueProbe({"default": 4, "train": 2}, [{"name": "a"}, {"name": "b"}]))
    text = scrape(app)
    assert value(text, "al_loop_queue_depth", queue="default") == 4
    assert value(text, "al_loop_queue_depth", queue="train") == 2
    assert value(text, "al_loop_workers") == 2 and value(text, "al_loop_queue_probe_up") == 1

    class Down:
        def depth(self) -> dict[str, int]:
            raise TimeoutError("broker timeout")

        def workers(self) -> list[dict]:
            raise TimeoutError("broker timeout")

    set_queue_probe(app, Down())
    text = scrape(app)
    assert value(text, "al_loop_queue_probe_up") == 0 and value(text, "al_loop_store_up") == 1


def test_webhook_latency_is_timed_and_counters_are_per_app(served, tmp_path) -> None:
    app, _ = served
    client = app.test_client()
    client.post("/webhook", json={"action": "PING"})
    client.post("/webhook", data=b"not json", content_type="application/json")
    client.get("/health")  # not a webhook
    text = scrape(app)
    assert value(text, "al_loop_webhook_latency_seconds_count") == 2
    codes = {k[1][0][1]: v for k, v in samples(text).items() if k[0] == "al_loop_webhook_requests_total"}
    assert sum(codes.values()) == 2
    with app.app_context():
        observe_webhook(0.004, status=200)
        count_labels(3)
        count_labels(1, "duplicate")
        count_labels(2, "weird")
    text = scrape(app)
    assert value(text, "al_loop_webhook_latency_seconds_count") == 3
    assert value(text, "al_loop_label_events_total", outcome="created") == 3
    assert value(text, "al_loop_label_events_total", outcome="duplicate") == 1
    assert value(text, "al_loop_label_events_total", outcome="other") == 2
    # outside an app context: a no-op, never an error
    observe_webhook(0.1)
    count_labels(5)
    other = create_app(_settings(tmp_path / "other"), store=Store("sqlite://"))
    assert value(scrape(other), "al_loop_webhook_latency_seconds_count") == 0


def test_scrape_survives_a_broken_store(served, monkeypatch) -> None:
    app, live = served

    def boom(*_a, **_k):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(live.store, "list_projects", boom)
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200
    assert value(resp.get_data(as_text=True), "al_loop_store_up") == 0
