"""Stopping advice where people read it: the monitoring summary, ``al-loop status``, the dashboard and the API."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from al_loop.config import LoopConfig, TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.rounds import RoundService
from al_loop.rounds.stopping import criteria_record
from al_loop.store import Store
from al_loop.store.records import payload_from_example
from annotator_bridge import monitoring
from annotator_bridge.commands.status import render_project
from annotator_bridge.web.dashboard import stopping_chart
from tests.bridge.monitoring_data import MetricModel, SteppingClock, cls_examples

AUTH = {"Authorization": "Bearer t"}


def _project(store: Store, artifacts: Path, rounds: int = 5, **loop: Any) -> int:
    schema = LabelSchema.build("classification", ["neg", "pos"])
    cfg = LoopConfig(**{"strategy": "least_confidence", "batch_size": 8, "seed_size": 10, "retrain_every": 0,
                        "stop_set_size": 20, **loop})
    p = store.create_project(f"stop-{loop.get('stop_set_size', 20)}", schema, loop=cfg, training=TrainingConfig())
    pool = cls_examples(80)
    store.add_items(p.id, pool, "pool")
    store.add_items(p.id, cls_examples(20, prefix="t", offset=1000), "test")
    gold = {e.item_id: payload_from_example(e) for e in pool}
    service = RoundService(store, MetricModel, artifacts)
    for _ in range(rounds):
        rnd = service.run_round(service.create_round(p.id, trigger="test").id).round
        assert rnd.status == "succeeded", rnd.error
        for s in store.get_scores(rnd.id, selected_only=True):
            store.record_label(p.id, s.item_id, f"ls:{s.item_id}", payload=gold[s.item_id], source="labelstudio")
    return p.id


@pytest.fixture
def store() -> Store:
    return Store("sqlite://", clock=SteppingClock(datetime(2026, 3, 2, 12)))


def _make_stable(store: Store, project_id: int) -> None:
    """The newest round as if its stop-set predictions had been stable for three rounds."""
    rnd = store.list_rounds(project_id)[-1]
    record = criteria_record([1.0, 0.995], {"compared": 18, "kappa": 1.0, "changed": 0.0}, 0.02, stop_set=20,
                             predicted=18)
    store.update_round(rnd.id, metrics={**rnd.metrics, "stopping": record})


def test_summary_follows_the_rounds(store, tmp_path) -> None:
    pid = _project(store, tmp_path / "a")
    st = monitoring.stopping_summary(store, pid)
    trained = [r for r in store.list_rounds(pid) if "stopping" in r.metrics]
    assert [p["round"] for p in st["trend"]] == [r.index for r in trained] == [1, 2, 3, 4]
    assert st["trend"][0]["kappa"] is None and all(p["kappa"] is not None for p in st["trend"][1:])
    last = trained[-1].metrics["stopping"]
    assert st["latest"]["kappa"] == pytest.approx(last["kappa"]) and st["latest"]["stop_set"] == 20
    assert st["advice"] == last["advice"] and st["enabled"] and not st["paused"]
    assert [c["name"] for c in st["criteria"]] == ["stabilizing_predictions", "classification_change",
                                                   "overall_uncertainty"]
    assert st["thresholds"] == {"kappa": 0.99, "kappa_window": 3, "changed": 0.01, "uncertainty": 0.05}
    assert monitoring.project_snapshot(store, pid)["stopping"] == st
    assert monitoring.project_status(store, pid)["stopping"] == st


def test_summary_without_criteria(store, tmp_path) -> None:
    off = _project(store, tmp_path / "a", rounds=3, stop_set_size=0)
    st = monitoring.stopping_summary(store, off)
    assert not st["enabled"] and st["latest"] is None and st["trend"] == [] and "off" in st["advice"]
    fresh = _project(store, tmp_path / "b", rounds=0, stop_set_size=7)
    assert monitoring.stopping_summary(store, fresh)["advice"].startswith("no stopping criteria yet")


def test_status_command_prints_the_advice_and_the_kappa_trend(store, tmp_path) -> None:
    pid = _project(store, tmp_path / "a", rounds=4, pause_when_stable=True)  # two kappas: the window is not full
    text = render_project(monitoring.project_snapshot(store, pid))
    assert "WHEN TO STOP (stop set 20):" in text and "kappa by labels:" in text
    assert "stabilizing predictions: no" in text
    _make_stable(store, pid)
    text = render_project(monitoring.project_snapshot(store, pid))
    assert "predictions have been stable for 3 rounds" in text
    assert "more labels are unlikely to change the model much" in text
    assert "automatic retraining is paused" in text and "stabilizing predictions: holds" in text


@pytest.fixture
def client_for(tmp_path):
    from annotator_bridge.settings import Settings
    from annotator_bridge.web import create_app

    def make(store: Store) -> Any:
        settings = Settings(home=tmp_path, database_url="sqlite://", broker_url="filesystem://",
                            artifacts_dir=tmp_path / "art", api_token="t")
        return create_app(settings, store=store).test_client()

    return make


def test_dashboard_shows_the_trend_and_the_sentence(store, tmp_path, client_for) -> None:
    pid = _project(store, tmp_path / "a")
    client = client_for(store)
    html = client.get(f"/dashboard/{pid}").get_data(as_text=True)
    assert 'id="stopping"' in html and 'id="stopping-advice"' in html and "line-chart stopping" in html
    assert 'data-criterion="stabilizing_predictions"' in html and " style=" not in html
    _make_stable(store, pid)
    frag = client.get(f"/dashboard/{pid}/fragment").get_data(as_text=True)
    assert "predictions have been stable for 3 rounds" in frag and 'class="advice stable"' in frag
    data = client.get(f"/dashboard/{pid}/data.json").get_json()
    assert data["stopping"]["stable"] is True


def test_stopping_chart_draws_kappa_and_the_threshold() -> None:
    st = {"trend": [{"round": 1, "labels": 10, "kappa": None, "kappa_mean": None},
                    {"round": 2, "labels": 18, "kappa": 0.9, "kappa_mean": None},
                    {"round": 3, "labels": 26, "kappa": 0.97, "kappa_mean": None},
                    {"round": 4, "labels": 34, "kappa": 0.995, "kappa_mean": 0.955}],
          "thresholds": {"kappa": 0.99, "kappa_window": 3}}
    chart = stopping_chart(st)
    assert chart.count('class="pt" data-series="kappa"') == 3
    assert chart.count('class="pt" data-series="kappa-mean"') == 1
    assert 'class="hline"' in chart and "stable at 0.99" in chart
    assert "kappa needs two trained rounds" in stopping_chart({"trend": []})


def test_api_round_and_status_carry_the_criteria_not_the_stop_set(store, tmp_path, client_for) -> None:
    pid = _project(store, tmp_path / "a", rounds=3)
    client = client_for(store)
    rnd = client.get(f"/api/projects/{pid}/rounds/2", headers=AUTH).get_json()["round"]
    assert rnd["report"]["stop_set"] == {"size": 20, "predicted": rnd["metrics"]["stopping"]["predicted"]}
    assert set(rnd["metrics"]["stopping"]) >= {"kappa", "kappa_mean", "changed", "uncertainty", "holds", "advice"}
    listing = client.get(f"/api/projects/{pid}/rounds", headers=AUTH).get_json()["rounds"]
    assert "stopping" in listing[-1]["metrics"] and "report" not in listing[-1]
    status = client.get(f"/api/projects/{pid}/status", headers=AUTH).get_json()
    assert status["stopping"]["latest"]["round"] == 2 and status["stopping"]["advice"]
