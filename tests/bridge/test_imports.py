"""Import jobs through the API (202, then GET for state and counts) and ``al-loop import`` (its progress bar)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from al_loop.states import ImportStatus
from al_loop.store import Store
from al_loop.store.imports import list_imports
from annotator_bridge import cli
from annotator_bridge.client import wait_until
from annotator_bridge.commands import importer
from annotator_bridge.dispatch import InlineDispatcher
from annotator_bridge.web import create_app
from tests.bridge.test_import_security import AUTH, _web
from tests.bridge.test_loop import make_env


def _pool(path: Path, n: int, bad_line: int | None = None) -> Path:
    lines = [json.dumps({"id": f"t{i}", "text": f"pool text {i}"}) if i + 1 != bad_line else '{"id": "x", "text":'
             for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def web(tmp_path: Path) -> SimpleNamespace:
    folder = tmp_path / "allowed"
    folder.mkdir()
    w = _web(tmp_path / "web", AL_LOOP_IMPORT_DIRS=str(folder))
    w.folder = folder
    return w


def _post(web: SimpleNamespace, body: dict[str, Any], pid: int | None = None) -> Any:
    return web.client.post(f"/api/projects/{pid or web.pid}/items", json=body, headers=AUTH)


def _get(web: SimpleNamespace, url: str) -> Any:
    return web.client.get(url, headers=AUTH)


def test_a_background_path_import_answers_202_and_the_job_reports_its_counts(web: SimpleNamespace) -> None:
    path = _pool(web.folder / "pool.jsonl", 1_200)
    resp = _post(web, {"path": str(path), "background": True})
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()["import"]
    assert job["id"] >= 1 and job["project_id"] == web.pid and job["bytes_total"] == path.stat().st_size
    assert ("run_import", (job["id"],)) in web.dispatcher.calls
    done = _get(web, f"/api/projects/{web.pid}/imports/{job['id']}").get_json()["import"]
    assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["error"] is None
    assert (done["rows_read"], done["added"], done["existing"], done["duplicates"]) == (1_200, 1_200, 0, 0)
    assert done["bytes_read"] == done["bytes_total"]
    assert web.store.count_items(web.pid) == 1_200
    listed = _get(web, f"/api/projects/{web.pid}/imports").get_json()["imports"]
    assert [j["id"] for j in listed] == [job["id"]]
    again = _post(web, {"path": str(path), "background": True}).get_json()["import"]
    final = _get(web, f"/api/projects/{web.pid}/imports/{again['id']}").get_json()["import"]
    assert (final["status"], final["added"], final["existing"]) == ("succeeded", 0, 1_200)


def test_small_files_stay_synchronous_and_large_ones_become_jobs(web: SimpleNamespace,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = _pool(web.folder / "small.jsonl", 20)
    resp = _post(web, {"path": str(path)})
    assert resp.status_code == 201 and resp.get_json()["added"] == 20  # as before: the report in the answer
    monkeypatch.setattr("annotator_bridge.loop.projects.SYNC_IMPORT_MAX_BYTES", 100)
    big = _pool(web.folder / "big.jsonl", 50)
    resp = _post(web, {"path": str(big)})
    # the inline dispatcher ran the job inside the request; a worker would leave it pending or running here
    assert resp.status_code == 202 and resp.get_json()["import"]["status"] == "succeeded"
    assert web.store.count_items(web.pid) == 50


def test_a_failed_job_names_the_line_keeps_the_batches_before_and_the_api_says_so(
        web: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web.loop.projects, "import_batch_size", 100)
    path = _pool(web.folder / "broken.jsonl", 450, bad_line=321)
    job = _post(web, {"path": str(path), "background": True}).get_json()["import"]
    got = _get(web, f"/api/projects/{web.pid}/imports/{job['id']}").get_json()["import"]
    assert got["status"] == "failed" and f"{path}:321" in got["error"] and "bad JSON" in got["error"]
    assert got["added"] == 300 == web.store.count_items(web.pid)
    assert 0 < got["progress"] < 1


def test_import_routes_refuse_what_they_should(web: SimpleNamespace, tmp_path: Path) -> None:
    outside = _pool(tmp_path / "outside.jsonl", 3)
    resp = _post(web, {"path": str(outside), "background": True})
    assert resp.status_code == 400 and "AL_LOOP_IMPORT_DIRS" in resp.get_json()["error"]["message"]
    resp = _post(web, {"items": [{"id": "a", "text": "x"}], "background": True})
    assert resp.status_code == 400 and "'background'" in resp.get_json()["error"]["message"]
    resp = _post(web, {"path": str(_pool(web.folder / "p.jsonl", 3)), "background": "yes"})
    assert resp.status_code == 400
    resp = _post(web, {"path": str(web.folder / "p.jsonl"), "background": True, "format": "xml"})
    assert resp.status_code == 400 and "unknown format" in resp.get_json()["error"]["message"]
    assert _get(web, f"/api/projects/{web.pid}/imports/1").status_code == 404
    assert _get(web, f"/api/projects/{web.pid}/imports/99999999999").status_code == 404
    assert _get(web, "/api/projects/999/imports").status_code == 404
    job = _post(web, {"path": str(web.folder / "p.jsonl"), "background": True}).get_json()["import"]
    other = web.loop.create_project({"name": "other", "task": "classification", "labels": ["a", "b"]}).id
    assert _get(web, f"/api/projects/{other}/imports/{job['id']}").status_code == 404  # another project's


def test_a_redelivered_import_task_does_not_import_twice(web: SimpleNamespace) -> None:
    path = _pool(web.folder / "pool.jsonl", 30)
    job = _post(web, {"path": str(path), "background": True}).get_json()["import"]
    assert isinstance(web.dispatcher, InlineDispatcher)
    web.dispatcher.run_import(job["id"])  # a second delivery: the job is finished, nothing happens
    assert web.loop.store.count_items(web.pid) == 30
    assert [j.status for j in list_imports(web.store, web.pid)] == [ImportStatus.SUCCEEDED]


# ---------------------------------------------------------------------------- the command line
def _cli_project(tmp_path: Path) -> tuple[str, int]:
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    web = _web(tmp_path / "cliweb")
    store = Store(url)
    from al_loop.data.schema import LabelSchema
    from al_loop.types import TaskKind

    pid = store.create_project("cli", LabelSchema(TaskKind.CLASSIFICATION, ("a", "b"))).id
    store.dispose()
    web.store.dispose()
    return url, pid


def test_cli_import_shows_a_progress_bar_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, pid = _cli_project(tmp_path)
    path = _pool(tmp_path / "pool.jsonl", 5_000)
    rc = cli.main(["import", "--project", str(pid), str(path), "--db", url, "--batch-size", "1000"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"import 1 into project {pid} (pool): succeeded; 5,000 rows read, 5,000 added" in out
    assert "import 1:" in err and "100%" in err and "rows=5,000" in err  # the tqdm bar, on stderr
    store = Store(url)
    assert store.count_items(pid) == 5_000
    assert list_imports(store, pid)[0].options["source"] == "cli"
    store.dispose()


def test_cli_import_of_a_broken_file_exits_1_with_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, pid = _cli_project(tmp_path)
    path = _pool(tmp_path / "broken.jsonl", 2_500, bad_line=2_222)
    args = argparse.Namespace(path=str(path), project=pid, format=None, split="pool", record_labels=False,
                              batch_size=1_000, db=url, no_progress=True)
    assert importer.run_import_command(args) == 1
    out, err = capsys.readouterr()
    assert "failed; 2,000 rows read, 2,000 added" in out
    assert f"{path}:2222: bad JSON" in err and "2,000 items stored before it are kept" in err
    assert "import 1:" not in err  # --no-progress
    assert cli.main(["import", "--project", "99", str(path), "--db", url]) == 2  # an unknown project
    assert "project 99" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the worker's task
def test_the_celery_dispatcher_sends_run_import_to_default_and_the_task_runs_the_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from annotator_bridge.settings import Settings
    from annotator_bridge.worker import tasks
    from annotator_bridge.worker.celery_app import make_celery
    from annotator_bridge.worker.config import IMPORT_TASK
    from annotator_bridge.worker.dispatcher import CeleryDispatcher

    folder = tmp_path / "allowed"
    folder.mkdir()
    settings = Settings.from_env({"AL_LOOP_HOME": str(tmp_path / "home"), "AL_LOOP_BROKER_URL": "filesystem://",
                                  "AL_LOOP_IMPORT_DIRS": str(folder)})
    app = make_celery(settings)
    sent: list[tuple[list[Any], str]] = []
    monkeypatch.setattr(app.tasks[IMPORT_TASK], "apply_async",
                        lambda args, queue, routing_key: sent.append((args, queue)))
    CeleryDispatcher(app).run_import(5)
    assert sent == [([5], "default")]

    tasks.reset_services()
    try:
        services = tasks.get_services(app)
        pid = services.loop.create_project({"name": "w", "task": "classification", "labels": ["a", "b"],
                                               "label_studio": False}).id
        job = services.loop.projects.start_import(pid, _pool(folder / "pool.jsonl", 40))
        app.tasks[IMPORT_TASK](job.id)  # the task body, in this process
        app.tasks[IMPORT_TASK](job.id)  # redelivered: the job is finished, nothing is read again
        done = list_imports(services.store, pid)
        assert [(j.status, j.added) for j in done] == [(ImportStatus.SUCCEEDED, 40)]
    finally:
        tasks.reset_services()


def test_a_broker_that_refuses_the_job_is_a_503_and_the_job_is_failed_not_left_pending(web: SimpleNamespace) -> None:
    from annotator_bridge.worker.dispatcher import BrokerUnavailable

    class Down(InlineDispatcher):
        def run_import(self, import_id: int) -> None:
            raise BrokerUnavailable("the task queue is unavailable")

    web.client.application.extensions["al_loop"].dispatcher = Down()
    resp = _post(web, {"path": str(_pool(web.folder / "p.jsonl", 3)), "background": True})
    assert resp.status_code == 503 and resp.get_json()["error"]["type"] == "BrokerUnavailable"
    [job] = list_imports(web.store, web.pid)
    assert job.status is ImportStatus.FAILED and "could not be queued" in (job.error or "")
    assert web.store.count_items(web.pid) == 0


def test_the_single_process_server_runs_the_job_behind_the_202_and_get_shows_its_progress(tmp_path: Path) -> None:
    folder = tmp_path / "allowed"
    folder.mkdir()
    env = make_env(tmp_path, extra_env={"AL_LOOP_API_TOKEN": AUTH["Authorization"].split()[1],
                                        "AL_LOOP_IMPORT_DIRS": str(folder)})
    pid = env.loop.create_project({"name": "bg", "task": "classification", "labels": ["a", "b"],
                                   "label_studio": False}).id
    app = create_app(env.settings, store=env.store)  # no dispatcher: the background thread
    services = app.extensions["al_loop"]
    services.loop.projects.import_batch_size = 100
    go, calls, real = threading.Event(), [], env.store.add_item_batch

    def held(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the first batch is stored and its progress written; hold the second
            assert go.wait(30)
        return real(*args, **kwargs)

    env.store.add_item_batch = held  # type: ignore[method-assign]
    client = app.test_client()
    path = _pool(folder / "pool.jsonl", 350)
    job = client.post(f"/api/projects/{pid}/items", json={"path": str(path), "background": True},
                      headers=AUTH).get_json()["import"]
    url = f"/api/projects/{pid}/imports/{job['id']}"
    wait_until(lambda: client.get(url, headers=AUTH).get_json()["import"]["rows_read"] == 100, 30, 0.02, "batch 1")
    mid = client.get(url, headers=AUTH).get_json()["import"]
    assert mid["status"] == "running" and mid["added"] == 100 and 0 < mid["progress"] < 0.5
    go.set()
    services.dispatcher.join()
    done = client.get(url, headers=AUTH).get_json()["import"]
    assert (done["status"], done["rows_read"], done["added"], done["progress"]) == ("succeeded", 350, 350, 1.0)
    services.dispatcher.close()


def test_a_worker_whose_folders_do_not_allow_the_path_fails_the_job(web: SimpleNamespace, tmp_path: Path) -> None:
    path = _pool(web.folder / "pool.jsonl", 5)
    job = web.loop.projects.start_import(web.pid, path)
    web.loop.settings = dataclasses.replace(web.settings, import_dirs=(tmp_path / "elsewhere",))
    done = web.loop.execute_import(job.id)
    assert done.status is ImportStatus.FAILED and "AL_LOOP_IMPORT_DIRS" in (done.error or "")
    assert web.store.count_items(web.pid) == 0
