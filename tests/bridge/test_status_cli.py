"""``al-loop status``: tables and JSON from a database holding real rounds."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from al_loop.store import Store
from annotator_bridge.cli import main
from annotator_bridge.commands import status as status_cmd
from annotator_bridge.monitoring import StaticQueueProbe
from tests.bridge.monitoring_data import build_live_project


@pytest.fixture
def db(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'al-loop.db'}"
    store = Store(url)
    live = build_live_project(store, home / "artifacts", rounds=3)
    return home, url, live


def test_all_projects_table(db, capsys) -> None:
    _, url, live = db
    assert main(["status", "--db", url]) == 0
    out = capsys.readouterr().out
    promoted = live.store.promoted_version(live.project_id)
    score = live.store.list_rounds(live.project_id)[-1].metrics["score"]
    line = next(ln for ln in out.splitlines() if " reviews " in ln)
    assert line.split()[:6] == [str(live.project_id), "reviews", "classification", "3", "#2", "succeeded"]
    assert f"{score:.3f}" in line and promoted.name in line
    assert "queues and workers: unknown" in out


def test_one_project_in_detail(db, capsys) -> None:
    _, url, live = db
    store, pid = live.store, live.project_id
    rnd = live.service.create_round(pid, trigger="api")
    store.claim_round(rnd.id, "gpu-worker", timedelta(minutes=10))
    store.update_round(rnd.id, phase="score", progress=0.9)
    assert main(["status", "--db", url, "--project", str(pid)]) == 0
    out = capsys.readouterr().out
    assert f"PROJECT {pid} 'reviews'" in out
    assert "ACTIVE ROUND #3 running: phase score 90%, worker gpu-worker" in out
    rounds_block = out.split("ROUNDS")[1].split("MODEL VERSIONS")[0]
    rows = [ln.split() for ln in rounds_block.splitlines()[3:] if ln.strip()]
    assert [r[0] for r in rows] == ["3", "2", "1", "0"]
    assert rows[0][1:4] == ["running", "score", "90%"]
    for row, rnd in zip(rows[1:], reversed(store.list_rounds(pid)[:3])):
        assert row[1] == "succeeded" and row[2] == str(rnd.n_labels) and row[4] == rnd.version_tag
        if rnd.metrics.get("score") is not None:
            assert row[5] == f"{rnd.metrics['score']:.3f}"
    for section in ("MODEL VERSIONS", "PER LABEL", "LABELS (items)", "ANNOTATORS", "BATCH IN LABEL STUDIO"):
        assert section in out
    assert "alice" in out and "bob" in out


def test_json_output_and_settings_from_the_environment(db, capsys, monkeypatch) -> None:
    home, _, live = db
    monkeypatch.setenv("AL_LOOP_HOME", str(home))
    monkeypatch.delenv("AL_LOOP_DATABASE_URL", raising=False)
    monkeypatch.setattr(status_cmd, "load_queue_probe", lambda settings: StaticQueueProbe({"train": 2}, []))
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in data["projects"]] == ["reviews"] and data["queues"]["queues"] == {"train": 2}
    assert main(["status", "--json", "--project", str(live.project_id), "--no-probe"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in snap["rounds"]] == [0, 1, 2]
    assert snap["summary"]["promoted"] == live.store.promoted_version(live.project_id).name
    assert snap["liveness"]["available"] is False


def test_errors_missing_database_and_unknown_project(db, tmp_path, capsys) -> None:
    _, url, _ = db
    assert main(["status", "--db", f"sqlite:///{tmp_path / 'nope.db'}"]) == 1
    assert "no database" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()
    assert main(["status", "--db", url, "--project", "99"]) == 2
    assert "project 99 not found" in capsys.readouterr().err


def test_table_alignment() -> None:
    text = status_cmd.table(["a", "num"], [["x", 1], ["longer", 12345]], right=(1,))
    lines = text.splitlines()
    assert lines[0] == "  a         num" and lines[1] == "  ------  -----"
    assert lines[2] == "  x           1" and lines[3] == "  longer  12345"
