"""Monitoring facts (annotator_bridge.monitoring) and SVG charts, on real rounds made with the word-vote model."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from datetime import datetime, timedelta

import pytest

from al_loop.config import LoopConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import NotFoundError
from al_loop.rounds import RoundService
from al_loop.store import Store
from annotator_bridge import monitoring
from annotator_bridge.monitoring import NullQueueProbe, QueueProbe, StaticQueueProbe
from annotator_bridge.web import svg
from tests.bridge.monitoring_data import MetricModel, SteppingClock, build_live_project, ner_examples

T0 = datetime(2026, 3, 2, 12, 0, 0)


@pytest.fixture
def live(tmp_path):
    clock = SteppingClock(T0)
    store = Store("sqlite://", clock=clock)
    lp = build_live_project(store, tmp_path / "art", rounds=4, label_time=T0 - timedelta(hours=2),
                            label_step=timedelta(minutes=5))
    return lp


def test_rounds_table_matches_the_store(live) -> None:
    store, pid = live.store, live.project_id
    rows = monitoring.rounds_table(store, pid)
    rounds = store.list_rounds(pid)
    assert [r["index"] for r in rows] == [r.index for r in rounds] == [0, 1, 2, 3]
    assert rows[0]["score"] is None and rows[0]["delta"] is None and "cold" in rows[0]["version"]
    for row, rnd in zip(rows, rounds):
        assert row["status"] == "succeeded"
        assert row["labels"] == rnd.n_labels and row["tokens"] == rnd.n_tokens
        assert row["version"] == rnd.version_tag and row["model_version_id"] == rnd.model_version_id
        assert row["durations"]["total"] == rnd.timings["total"]
    assert [r["labels"] for r in rows] == [0, 10, 18, 26]
    scores = [r.metrics["score"] for r in rounds[1:]]
    assert [r["score"] for r in rows[1:]] == scores
    assert rows[1]["delta"] is None
    for k in (2, 3):
        assert rows[k]["delta"] == pytest.approx(scores[k - 1] - scores[k - 2])
        assert rows[k]["helped"] == (rows[k]["delta"] > 0)
    t = rounds[2].timings
    assert rows[2]["durations"]["train"] == t["train"]
    assert rows[2]["durations"]["score"] == pytest.approx(t["score"] + t["select"])
    assert rows[2]["durations"]["push"] is None
    assert rows[2]["elapsed_s"] is not None and rows[2]["elapsed_s"] >= 0


def test_running_round_shows_progress_heartbeat_and_staleness(live) -> None:
    store, pid = live.store, live.project_id
    rnd = live.service.create_round(pid, trigger="api")
    pending = monitoring.liveness(store, pid, None)["active_round"]
    assert pending["status"] == "pending" and pending["heartbeat_age_s"] is None and pending["waiting_s"] >= 0
    store.claim_round(rnd.id, "worker-7", timedelta(minutes=10))
    store.update_round(rnd.id, phase="train", progress=0.4, n_labels=34, n_tokens=200,
                       timings={"push": 1.25}, report={"push": {"error": "boom"}})
    beat = store.get_round(rnd.id).heartbeat_at
    now = beat + timedelta(seconds=30)
    row = monitoring.rounds_table(store, pid, now=now)[-1]
    assert (row["status"], row["phase"], row["progress"], row["labels"]) == ("running", "train", 0.4, 34)
    assert row["heartbeat_age_s"] == 30.0 and not row["stale"] and row["score"] is None
    assert row["durations"]["push"] == 1.25 and row["push_error"] == "boom"
    act = monitoring.liveness(store, pid, None, now=now)["active_round"]
    assert act["owner"] == "worker-7" and act["phase"] == "train" and not act["stale"]
    later = beat + timedelta(minutes=11)
    assert monitoring.rounds_table(store, pid, now=later)[-1]["stale"]
    assert monitoring.liveness(store, pid, None, now=later)["active_round"]["stale"]
    summary = monitoring.project_summary(store, pid, now=now)
    assert summary["active"] and summary["last_round"]["status"] == "running"


def test_learning_curve_live_points_and_simulation_overlay(live) -> None:
    store, pid = live.store, live.project_id
    curve = monitoring.learning_curve(store, pid)
    assert curve["metric"] == "accuracy" and curve["simulation"] is None
    expected = [(r.n_labels, r.metrics["score"]) for r in store.list_rounds(pid) if r.metrics.get("score") is not None]
    assert [(p["labels"], p["score"]) for p in curve["live"]] == expected
    points = [
        {"strategy": s, "repeat": rep, "round": k, "labels": 10 * k, "tokens": 50 * k,
         "score": base + 0.1 * k + rep / 10, "seconds": 1.0}
        for s, base in (("least_confidence", 0.3), ("random", 0.2)) for rep in (0, 1) for k in (1, 2)
    ]
    points.append({"strategy": "random", "repeat": 0, "round": 3, "labels": 30, "tokens": 1, "score": None})
    store.add_simulation(pid, "old", points[:2])
    store.add_simulation(pid, "sim-x", points)
    sim = monitoring.learning_curve(store, pid)["simulation"]
    assert sim["name"] == "sim-x"
    assert [s["strategy"] for s in sim["series"]] == ["random", "least_confidence"]  # baseline first
    rnd = sim["series"][0]["points"]
    assert [p["labels"] for p in rnd] == [10, 20]  # the None score is dropped
    assert rnd[0]["score"] == pytest.approx(0.35) and rnd[0]["lo"] == pytest.approx(0.3)
    assert rnd[0]["hi"] == pytest.approx(0.4) and rnd[0]["n"] == 2


def test_simulate_command_stores_the_overlay_the_dashboard_draws(tmp_path, monkeypatch, capsys) -> None:
    """`al-loop simulate --project ID` keeps its curves with the project; the learning curve shows them."""
    import al_loop.simulate
    from annotator_bridge.cli import main
    from tests.bridge.monitoring_data import cls_examples, write_jsonl

    url = f"sqlite:///{tmp_path / 'al-loop.db'}"
    store = Store(url)
    live = build_live_project(store, tmp_path / "art", rounds=2)
    train = write_jsonl(tmp_path / "train.jsonl", cls_examples(60, "t"))
    test = write_jsonl(tmp_path / "test.jsonl", cls_examples(20, "e", offset=100))
    real = al_loop.simulate.run_simulation
    monkeypatch.setattr(al_loop.simulate, "run_simulation",
                        lambda spec, progress=True: real(spec, model_factory=MetricModel, progress=False))
    args = ["simulate", "--train", str(train), "--test", str(test), "--task", "classification", "--seed-size", "10",
            "--batch-size", "10", "--rounds", "2", "--repeats", "1", "--out", str(tmp_path / "out"), "--no-progress",
            "--db", url]
    assert main([*args, "--project", "999"]) == 2  # checked before anything runs
    assert "project 999 not found" in capsys.readouterr().err
    assert main([*args, "--project", str(live.project_id)]) == 0
    sim = monitoring.learning_curve(store, live.project_id)["simulation"]
    assert sim is not None and sim["name"] == "train.jsonl: random, least_confidence"
    assert [s["strategy"] for s in sim["series"]] == ["random", "least_confidence"]
    assert all(len(s["points"]) >= 2 and s["points"][0]["labels"] < s["points"][-1]["labels"] for s in sim["series"])
    store.dispose()


def test_per_label_comparison_follows_promotion_and_rollback(live) -> None:
    store, pid = live.store, live.project_id
    versions = store.list_versions(pid)
    assert len(versions) == 3
    cmp = monitoring.per_label_comparison(store, pid)
    assert (cmp["current"], cmp["previous"]) == (versions[2].name, versions[1].name)
    assert [r["label"] for r in cmp["rows"]] == ["neg", "pos"]
    for row in cmp["rows"]:
        cur = versions[2].metrics["per_label"][row["label"]]
        prev = versions[1].metrics["per_label"][row["label"]]
        assert row["current"]["f1"] == pytest.approx(cur["f1"]) and row["previous"]["f1"] == pytest.approx(prev["f1"])
        assert row["delta_f1"] == pytest.approx(cur["f1"] - prev["f1"])
        assert row["support"] == cur["support"]
    live.service.rollback(pid)
    cmp = monitoring.per_label_comparison(store, pid)
    assert (cmp["current"], cmp["previous"]) == (versions[1].name, versions[0].name)
    table = monitoring.versions_table(store, pid)
    assert [v["promoted"] for v in table] == [False, True, False]
    assert table[1]["round_index"] == 2 and table[1]["has_artifact"]
    assert table[2]["delta"] == pytest.approx(table[2]["score"] - table[1]["score"])


def test_label_distribution_and_batch(live) -> None:
    store, pid = live.store, live.project_id
    dist = monitoring.label_distribution(store, pid)
    stats = store.label_stats(pid)
    assert dist["labelled"] == stats["labelled"] == 26
    assert dist["per_label"] == {"neg": stats["per_label"].get("neg", 0), "pos": stats["per_label"].get("pos", 0)}
    assert sum(dist["per_label"].values()) == 26
    assert dist["pool"] == 80 and dist["unlabelled"] == 54 and dist["test"] == 30 and dist["unit"] == "items"

    batch = monitoring.current_batch(store, pid)
    last = store.list_rounds(pid)[-1]
    selected = store.get_scores(last.id, selected_only=True)
    assert batch["round_index"] == last.index and batch["version"] == last.version_tag
    assert [b["item_id"] for b in batch["items"]] == [s.item_id for s in selected]
    assert batch["size"] == 8 and batch["done"] == 0
    assert all(b["prediction"] in ("pos", "neg") and 0 < b["confidence"] <= 1 for b in batch["items"])
    first = selected[0].item_id
    store.record_label(pid, first, "ls:x", payload=live.gold[first], source="labelstudio", annotator="carol")
    batch = monitoring.current_batch(store, pid)
    assert batch["done"] == 1 and batch["items"][0]["answered"]


def test_annotation_rate_per_hour_and_per_annotator(live) -> None:
    store, pid = live.store, live.project_id
    # 26 labels, alternating alice/bob, every 5 minutes from T0 - 2 h
    now = T0 + timedelta(minutes=20)
    rate = monitoring.annotation_rate(store, pid, now=now, hours=4)
    assert len(rate["buckets"]) == 4 and rate["buckets"][-1]["start"] == "2026-03-02T12:00:00Z"
    assert [b["count"] for b in rate["buckets"]] == [0, 12, 12, 2]
    assert rate["window_total"] == 26 and rate["per_hour"] == 6.5
    # last hour = (11:20, 12:20]: labels at 11:20 .. 12:05 -> 10
    assert rate["last_hour"] == 10
    names = {a["name"]: a for a in rate["annotators"]}
    assert set(names) == {"alice", "bob"} and names["alice"]["total"] == names["bob"]["total"] == 13
    assert names["alice"]["last_seen"] == "2026-03-02T12:00:00Z" and names["bob"]["idle_s"] == 15 * 60
    # skipped count as answered, deleted do not
    store.record_label(pid, "i1", "ls:skip", payload=None, source="labelstudio", skipped=True, annotator="carol",
                       updated_at=T0 + timedelta(minutes=10))
    store.delete_labels(pid, ["ls:1"])
    rate = monitoring.annotation_rate(store, pid, now=now, hours=4)
    names = {a["name"]: a for a in rate["annotators"]}
    assert names["carol"] == {**names["carol"], "total": 1, "skipped": 1, "last_hour": 1}
    assert names["alice"]["total"] == 12 and rate["window_total"] == 26


def test_probe_errors_never_break_the_snapshot(live) -> None:
    class Broken:
        def depth(self) -> dict[str, int]:
            raise ConnectionError("redis down")

        def workers(self) -> list[dict]:
            return [{"name": "w1", "queues": ["train"]}]

    assert isinstance(Broken(), QueueProbe) and isinstance(NullQueueProbe(), QueueProbe)
    out = monitoring.probe_queues(Broken())
    assert out["queues"] == {} and out["workers"] == [{"name": "w1", "queues": ["train"]}]
    assert "redis down" in out["error"]
    assert monitoring.probe_queues(None) == {"available": False, "queues": {}, "workers": [], "error": None}
    probe = StaticQueueProbe({"default": 3, "train": 1}, [{"name": "celery@a"}])
    snap = monitoring.project_snapshot(live.store, live.project_id, probe)
    assert snap["liveness"]["queues"] == {"default": 3, "train": 1} and snap["liveness"]["error"] is None
    json.dumps(snap)  # JSON-ready
    assert set(snap) >= {"project", "summary", "rounds", "curve", "per_label", "labels", "annotation", "batch",
                         "versions", "liveness"}


def test_round_report_classification(live) -> None:
    store, pid = live.store, live.project_id
    rnd = store.list_rounds(pid)[2]
    rep = monitoring.round_report(store, pid, rnd.id)
    assert rep["round"]["index"] == 2 and rep["metric"] == "accuracy"
    assert rep["metrics"]["score"] == rnd.metrics["score"]
    assert set(rep["per_label"]) == {"neg", "pos"}
    assert rep["confusion"]["labels"] == ["neg", "pos"] and len(rep["confusion"]["matrix"]) == 2
    assert sum(map(sum, rep["confusion"]["matrix"])) == 30
    assert len(rep["top_uncertain"]) == 10 and rep["top_uncertain"][0]["rank"] == 0
    top = monitoring.confusion_top_errors({"labels": ["a", "b", "c"], "matrix": [[5, 2, 0], [4, 1, 1], [0, 0, 3]]})
    assert top == [{"gold": "b", "predicted": "a", "count": 4}, {"gold": "a", "predicted": "b", "count": 2},
                   {"gold": "b", "predicted": "c", "count": 1}]
    other = store.create_project("other", LabelSchema.build("classification", ["x", "y"]))
    with pytest.raises(NotFoundError):
        monitoring.round_report(store, other.id, rnd.id)


def test_ner_project_reports_entities(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'ner.sqlite'}")
    lp = build_live_project(store, tmp_path / "art", name="ner", pool=ner_examples(30),
                            test=ner_examples(10, prefix="t", offset=100), labels=("Disease",), task="ner",
                            rounds=3, batch_size=4, seed_size=5)
    rows = monitoring.rounds_table(store, lp.project_id)
    assert rows[-1]["tokens"] > rows[-1]["labels"] > 0
    assert monitoring.learning_curve(store, lp.project_id)["metric"] == "entity micro-F1"
    dist = monitoring.label_distribution(store, lp.project_id)
    assert dist["unit"] == "entity mentions" and dist["per_label"] == {"Disease": 9}
    rep = monitoring.round_report(store, lp.project_id, rows[-1]["id"])
    assert "Disease" in rep["per_label"] and "Disease" in (rep["errors"] or {})
    batch = monitoring.current_batch(store, lp.project_id)
    assert all("[Disease]" in b["prediction"] or b["prediction"] == "(no entities)" for b in batch["items"])


def test_failed_round_row_and_no_rounds(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'f.sqlite'}")
    p = store.create_project("empty", LabelSchema.build("classification", ["a", "b"]),
                             loop=LoopConfig(batch_size=2, seed_size=2))
    assert monitoring.rounds_table(store, p.id) == [] and monitoring.current_batch(store, p.id) is None
    summary = monitoring.project_summary(store, p.id)
    assert summary["rounds"] == 0 and summary["score"] is None and not summary["active"]
    from al_loop.types import Example, ItemId

    store.add_items(p.id, [Example(ItemId(f"x{i}"), f"text {i}") for i in range(4)])
    service = RoundService(store, MetricModel, None)
    r0 = service.run_round(service.create_round(p.id).id).round
    item = store.get_scores(r0.id, selected_only=True)[0].item_id
    store.record_label(p.id, item, "bad", payload={"labels": ["nope"]}, source="api")
    r1 = service.run_round(service.create_round(p.id).id).round
    row = monitoring.rounds_table(store, p.id)[-1]
    assert r1.status == row["status"] == "failed" and "unknown label" in row["error"] and row["score"] is None


# ------------------------------------------------------------------------------ svg
def test_line_chart_marks_points_and_escapes_text() -> None:
    out = svg.line_chart(
        [svg.Series("live <b>&", [(10, 0.5), (20, 0.75)], key="live"),
         svg.Series("random", [(10, 0.4), (20, 0.6)], band=[(10, 0.3, 0.5), (20, 0.5, 0.7)], dashed=True)],
        title='a "title" <x>', x_label="labels", y_label="accuracy", y_min=0, y_max=1,
    )
    assert out.startswith("<svg") and out.endswith("</svg>")
    assert "<b>" not in out and "live &lt;b&gt;&amp;" in out and "&quot;title&quot;" in out
    pts = re.findall(r'<circle class="pt" data-series="([^"]+)" data-x="([^"]+)" data-y="([^"]+)"', out)
    assert pts == [("live", "10", "0.5"), ("live", "20", "0.75"), ("random", "10", "0.4"), ("random", "20", "0.6")]
    assert 'class="band"' in out and 'stroke-dasharray="6 4"' in out
    assert "no data" in svg.line_chart([svg.Series("x", [])], empty_text="no data yet")
    nan = svg.line_chart([svg.Series("x", [(1, float("nan")), (2, 0.5)])])
    assert nan.count('class="pt"') == 1


def test_bar_chart_and_heatmap() -> None:
    out = svg.bar_chart(["pos", "<neg>"], [svg.BarSeries("cur", [0.8, 0.6], key="c"),
                                            svg.BarSeries("prev", [None, 0.5], key="p")], value_max=1.0)
    bars = re.findall(r'data-series="(\w)" data-category="([^"]+)" data-value="([^"]+)"', out)
    assert bars == [("c", "pos", "0.8"), ("c", "&lt;neg&gt;", "0.6"), ("p", "&lt;neg&gt;", "0.5")]
    col = svg.bar_chart([str(h) for h in range(24)], [svg.BarSeries("n", list(range(24)))], horizontal=False,
                        label_every=6)
    assert col.count('class="bar"') == 24
    assert "no data" in svg.bar_chart([], [])
    hm = svg.heatmap(["a", "b"], ["a", "b"], [[3, 1], [0, 2]])
    assert re.findall(r'data-row="(\w)" data-col="(\w)" data-value="(\d+)"', hm) == [
        ("a", "a", "3"), ("a", "b", "1"), ("b", "a", "0"), ("b", "b", "2")]


@pytest.mark.parametrize(("lo", "hi", "expected"), [(0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]), (0.61, 0.93, None),
                                                   (10, 250, None), (5, 5, None)])
def test_nice_ticks_cover_the_range(lo, hi, expected) -> None:
    ticks = svg.nice_ticks(lo, hi, 5)
    if expected is not None:
        assert ticks == pytest.approx(expected)
    assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) >= 2
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1


# ------------------------------------------------------------------ dashboard routes
@pytest.fixture
def client(live, tmp_path):
    from annotator_bridge.settings import Settings
    from annotator_bridge.web import create_app

    settings = Settings(home=tmp_path, database_url="sqlite://", broker_url="filesystem://",
                        artifacts_dir=tmp_path / "art", api_token="t")
    return create_app(settings, store=live.store).test_client()


def test_dashboard_routes_render_from_the_store(live, client) -> None:
    store, pid = live.store, live.project_id
    listing = client.get("/dashboard/")
    assert listing.status_code == 200 and b"reviews" in listing.data
    assert "script-src 'self'" in listing.headers["Content-Security-Policy"]
    page = client.get(f"/dashboard/{pid}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert 'src="/dashboard/static/dashboard.js"' in html and "<style" not in html and " style=" not in html
    for rnd in store.list_rounds(pid):
        assert f'data-round-index="{rnd.index}"' in html and rnd.version_tag in html
    for v in store.list_versions(pid):
        if v.status != "promoted":
            assert f'data-url="/api/projects/{pid}/versions/{v.id}/promote"' in html
    frag = client.get(f"/dashboard/{pid}/fragment")
    assert frag.status_code == 200 and frag.headers["X-Dashboard-Active"] == "0"
    assert frag.headers["X-Dashboard-Digest"] and "<html" not in frag.get_data(as_text=True)
    assert frag.headers["X-Dashboard-Digest"] == hashlib.sha1(frag.data).hexdigest()[:16]
    data = client.get(f"/dashboard/{pid}/data.json").get_json()
    assert [r["index"] for r in data["rounds"]] == [0, 1, 2, 3] and data["summary"]["labelled"] == 26
    rid = store.list_rounds(pid)[-1].id
    report = client.get(f"/dashboard/{pid}/rounds/{rid}")
    assert report.status_code == 200 and b"What the model gets wrong" in report.data
    rep = client.get(f"/dashboard/{pid}/rounds/{rid}/report.json").get_json()
    assert rep["round"]["id"] == rid and rep["confusion"]["labels"] == ["neg", "pos"]
    assert client.get("/dashboard/static/dashboard.css").status_code == 200


def test_dashboard_not_found_and_empty_project(live, client) -> None:
    missing = client.get("/dashboard/999")
    assert missing.status_code == 404 and b"project 999 not found" in missing.data and b"<html" in missing.data
    assert client.get("/dashboard/999/data.json").status_code == 404
    other = live.store.create_project("fresh", LabelSchema.build("ner", ["PER", "LOC"]))
    page = client.get(f"/dashboard/{other.id}")
    assert page.status_code == 200 and b"No rounds yet" in page.data and b"the curve starts after" in page.data
    rid = live.store.list_rounds(live.project_id)[0].id
    assert client.get(f"/dashboard/{other.id}/rounds/{rid}").status_code == 404
    assert client.get(f"/dashboard/{other.id}/rounds/{rid}/report.json").status_code == 404


def test_fragment_reports_an_active_round(live, client) -> None:
    rnd = live.service.create_round(live.project_id, trigger="api")
    frag = client.get(f"/dashboard/{live.project_id}/fragment")
    assert frag.headers["X-Dashboard-Active"] == "1"
    assert f'data-round-index="{rnd.index}"' in frag.get_data(as_text=True)


def test_format_duration_shared_by_dashboard_and_cli() -> None:
    from annotator_bridge.commands.status import dur
    from annotator_bridge.monitoring import format_duration

    assert [format_duration(v) for v in (0.85, 12.34, 245, 7380)] == ["850 ms", "12.3 s", "4 m 05 s", "2 h 03 m"]
    assert [dur(v) for v in (0.85, 245, None)] == ["850ms", "4m05s", "-"]
    assert format_duration(float("nan"), missing="—") == "—"
    assert format_duration(True) == "-"
