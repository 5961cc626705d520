"""End to end: real Label Studio, real redis-server, real Celery workers, real ``al-loop serve``, real MiniLM.

Scenario (NER on NCBI-disease and classification on TREC): create the project through
al-loop's HTTP API (which creates the Label Studio project and connects the ML backend and
its webhook) -> round-0 predictions appear in Label Studio with project.model_version equal to
the predictions' version -> a script acting as an annotator labels a batch through Label
Studio's ``/next/`` -> webhooks -> the next round trains, evaluates and pushes predictions with
a new model_version -> ``/next/`` serves tasks in the new order (ascending score). Every
assertion about ordering reads Label Studio's own API.

Also ``al-loop up`` as a subprocess: ready banner, demo project with tasks and round-0
predictions, SIGINT stops every child.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from al_loop.data.readers import dedupe_examples, read_examples
from al_loop.types import Example, TaskKind
from annotator_bridge.labelstudio.gateway import LabelStudioGateway
from annotator_bridge.stack.local import READY_LINE
from tests.bridge import conftest_services
from tests.bridge.conftest_services import (
    WORKER_DEFAULT_ARGS,
    WORKER_TRAIN_ARGS,
    Annotator,
    ApiClient,
    al_loop_command,
    al_loop_env,
    annotator_token,
    free_port,
    prediction_scores,
    start_server,
    start_worker,
    wait_until,
)

redis_server = conftest_services.redis_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_TOKEN = "e2e-api-token-0123456789"
WEBHOOK_SECRET = "e2e-webhook-secret"
BATCH = 12
TRAINING = {"max_length": 64, "window_stride": 16, "batch_size": 8, "min_epochs": 2, "max_epochs": 3,
            "target_steps": 6, "val_fraction": 0.0, "inference_batch_size": 64}


class Stack:
    def __init__(self, api: ApiClient, gateway: LabelStudioGateway, label_studio: Any, procs: list[Any]) -> None:
        self.api, self.gw, self.ls, self.procs = api, gateway, label_studio, procs

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log()[-4000:]}" for p in self.procs)


@pytest.fixture(scope="module")
def stack(label_studio: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("e2e-home")
    port = free_port()
    env = al_loop_env(home, redis_server.url_for(3),
                      AL_LOOP_API_TOKEN=API_TOKEN, AL_LOOP_WEBHOOK_SECRET=WEBHOOK_SECRET,
                      AL_LOOP_PUBLIC_URL=f"http://127.0.0.1:{port}",
                      LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.api_key)
    procs: list[Any] = []
    t0 = time.monotonic()
    try:
        procs.append(start_worker(WORKER_DEFAULT_ARGS, env, home / "logs" / "worker-default.log"))
        procs.append(start_worker(WORKER_TRAIN_ARGS, env, home / "logs" / "worker-train.log"))
        server, url = start_server(env, home / "logs" / "serve.log", port)
        procs.append(server)
        print(f"\n[e2e] workers + al-loop serve up in {time.monotonic() - t0:.1f} s at {url}")
        with LabelStudioGateway(label_studio.url, label_studio.api_key, timeout=30, retries=2) as gw:
            yield Stack(ApiClient(url, API_TOKEN), gw, label_studio, procs)
    finally:
        for p in reversed(procs):
            p.stop()


def _ncbi(shared_data: Path) -> tuple[list[Example], list[Example]]:
    train = read_examples(shared_data / "ncbi_disease" / "train.tsv", task=TaskKind.NER, format="bio")
    test = read_examples(shared_data / "ncbi_disease" / "devel.tsv", task=TaskKind.NER, format="bio")
    pool, _ = dedupe_examples(train[:300])
    return pool[:160], test[:30]


def _trec(shared_data: Path) -> tuple[list[Example], list[Example]]:
    data, _ = dedupe_examples(read_examples(shared_data / "trec" / "TREC.train", task=TaskKind.CLASSIFICATION,
                                            format="trec"))
    return data[:160], data[1000:1030]


def _records(examples: list[Example], gold: bool) -> list[dict[str, Any]]:
    out = []
    for ex in examples:
        rec: dict[str, Any] = {"id": ex.item_id, "text": ex.text}
        if gold and ex.spans is not None:
            rec["spans"] = [s.to_dict() for s in ex.spans]
        if gold and ex.labels is not None:
            rec["labels"] = list(ex.labels)
        out.append(rec)
    return out


def _wait_pushed(st: Stack, pid: int, index: int, timeout: float = 600) -> dict[str, Any]:
    def pushed() -> Any:
        rounds = st.api.get(f"/api/projects/{pid}/rounds")["rounds"]  # type: ignore[index]
        rnd = next((r for r in rounds if r["index"] == index), None)
        if rnd is None:
            return None
        if rnd["status"] in ("failed", "cancelled") or rnd["push_status"] == "failed":
            raise AssertionError(f"round {index}: {rnd['status']} / push {rnd['push_status']}: {rnd['error']}\n"
                                 f"{st.logs()}")
        return rnd if rnd["push_status"] == "done" else None

    return wait_until(pushed, timeout, 0.25, f"round {index} pushed to Label Studio")  # type: ignore[return-value]


def _check_ls_version(st: Stack, ls_id: int, tag: str, n_expected: int) -> None:
    project = st.gw.get_project(ls_id)
    assert project.model_version == tag, "project.model_version must equal the predictions' model_version"
    assert project.sampling == "Uncertainty sampling"
    counts = st.gw.model_versions(ls_id)
    assert counts.get(tag) == n_expected, counts


def _check_next_order(st: Stack, annotator: Annotator, ls_id: int, tag: str, n: int) -> list[int]:
    """The next ``n`` tasks Label Studio serves have the lowest ``tag`` scores, in ascending order."""
    served = []
    for _ in range(n):
        scores = prediction_scores(st.gw, ls_id, tag)
        task = annotator.next()
        assert task is not None
        lowest = min(scores.values())
        assert scores[int(task["id"])] == lowest, (task["id"], scores[int(task["id"])], lowest, task.get("queue"))
        served.append(int(task["id"]))
        annotator.annotate(task)
    return served


def _scenario(st: Stack, name: str, task: str, pool: list[Example], test: list[Example]) -> dict[str, Any]:
    labels = sorted({s.label for ex in pool + test for s in (ex.spans or ())} |
                    {lb for ex in pool + test for lb in (ex.labels or ())})
    t0 = time.monotonic()
    project = st.api.post("/api/projects", {
        "name": name, "task": task, "labels": labels, "label_studio": {"title": name},
        "loop": {"strategy": "least_confidence", "seed_size": BATCH, "batch_size": BATCH, "retrain_every": BATCH},
        "training": TRAINING,
    })["project"]  # type: ignore[index]
    pid = int(project["id"])
    ls_id = int(project["integration"]["ls_project_id"])
    hooks = st.gw.list_webhooks(ls_id)
    assert len(hooks) == 1 and hooks[0]["url"].endswith("/webhook"), hooks  # the ML backend's, never a second one
    st.api.post(f"/api/projects/{pid}/items", {"items": _records(test, gold=True), "split": "test"})
    st.api.post(f"/api/projects/{pid}/items", {"items": _records(pool, gold=False), "start_round": True})

    # round 0 (cold start): predictions in Label Studio, project.model_version consistent
    r0 = _wait_pushed(st, pid, 0)
    _check_ls_version(st, ls_id, r0["version_tag"], len(pool))
    t_round0 = time.monotonic() - t0

    # an annotator labels the batch Label Studio serves (lowest round-0 score first)
    gold = {ex.item_id: ex for ex in pool}
    token = annotator_token(st.ls, st.gw, f"annotator-{task}@example.com")
    annotator = Annotator(st.gw, ls_id, gold, token=token)
    served = _check_next_order(st, annotator, ls_id, r0["version_tag"], BATCH)
    last_annotation = time.monotonic()
    wait_until(lambda: st.api.get(f"/api/projects/{pid}/status")["labels"]["labelled"] >= BATCH,  # type: ignore[index]
               60, 0.1, "webhooks to record the batch")

    # the policy starts round 1: trains, evaluates, pushes a new model version
    r1 = _wait_pushed(st, pid, 1)
    to_visible = time.monotonic() - last_annotation
    assert r1["version_tag"] != r0["version_tag"] and "cold" not in r1["version_tag"]
    assert r1["n_labels"] == BATCH and r1["trigger"] == "policy"
    _check_ls_version(st, ls_id, r1["version_tag"], len(pool) - BATCH)
    detail = st.api.get(f"/api/projects/{pid}/rounds/1")
    assert detail["round"]["metrics"].get("eval_set", "").startswith("test")  # type: ignore[index]

    # /next/ now follows round 1's order; its first task is al-loop's top-ranked item
    first = annotator.next()
    assert first is not None
    selected = detail["selected"]  # type: ignore[index]
    assert first["data"]["item_id"] == selected[0]["item_id"], (first["data"], selected[:3])
    annotator.annotate(first)
    more = _check_next_order(st, annotator, ls_id, r1["version_tag"], 2)
    assert not set(more) & set(served)
    scores = prediction_scores(st.gw, ls_id, r1["version_tag"])
    print(f"\n[e2e {task}] round 0 in LS after {t_round0:.1f} s; last annotation -> round 1 predictions visible "
          f"in LS: {to_visible:.1f} s; round 1 timings {r1['timings']}; metrics score "
          f"{r1['metrics'].get('score')}; {len(scores)} unlabelled tasks ordered by {r1['version_tag']}")
    return {"round0": r0, "round1": r1, "to_visible": to_visible}


def test_e2e_ner_ncbi_disease(stack: Stack, shared_data: Path) -> None:
    pool, test = _ncbi(shared_data)
    out = _scenario(stack, "e2e NCBI-disease", "ner", pool, test)
    assert out["round1"]["push_status"] == "done"
    # the trained model's predictions reach Label Studio as "labels" results with character offsets
    project = next(p for p in stack.api.get("/api/projects")["projects"]  # type: ignore[index]
                   if p["name"] == "e2e NCBI-disease")
    ls_id = int(project["integration"]["ls_project_id"])
    tag = out["round1"]["version_tag"]
    results = [r for t in stack.gw.list_tasks(ls_id, fields="all") for p in t.get("predictions") or []
               if p["model_version"] == tag for r in p["result"]]
    assert all(r["type"] == "labels" and r["value"]["end"] > r["value"]["start"] for r in results)


def test_e2e_classification_trec(stack: Stack, shared_data: Path) -> None:
    pool, test = _trec(shared_data)
    out = _scenario(stack, "e2e TREC", "classification", pool, test)
    assert out["round1"]["push_status"] == "done"
    project = next(p for p in stack.api.get("/api/projects")["projects"]  # type: ignore[index]
                   if p["name"] == "e2e TREC")
    ls_id = int(project["integration"]["ls_project_id"])
    tag = out["round1"]["version_tag"]
    results = [r for t in stack.gw.list_tasks(ls_id, fields="all") for p in t.get("predictions") or []
               if p["model_version"] == tag for r in p["result"]]
    assert results and all(r["type"] == "choices" and len(r["value"]["choices"]) == 1 for r in results)


# ------------------------------------------------------------------------------------- al-loop up
def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _run_up(home: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AL_LOOP_", "LABEL_STUDIO_"))}
    env.update({"AL_LOOP_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    if os.environ.get("AL_LOOP_LS_VENV"):
        args = (*args, "--ls-venv", os.environ["AL_LOOP_LS_VENV"])
    fh = open(log, "ab")  # noqa: SIM115 - the child writes until it exits
    return subprocess.Popen(al_loop_command("up", *args), env=env, stdout=fh, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=str(home))


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"al-loop up exited with {proc.returncode}:\n{log.read_text()[-5000:]}")
        return READY_LINE in log.read_text()

    wait_until(ready, timeout, 0.5, "al-loop up to print ready")


def _stop_up(proc: subprocess.Popen[bytes]) -> set[int]:
    kids = _descendants(proc.pid)
    assert kids, "al-loop up started no child processes"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 0
    wait_until(lambda: not [k for k in kids if _alive(k)], 30, 0.2, "every child of al-loop up to exit")
    return kids


def test_al_loop_up_local_stack(tmp_path: Path, label_studio: Any) -> None:
    del label_studio  # only makes sure .ls-venv and its empty-data snapshot exist (shared with this stack)
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "up.log"
    t0 = time.monotonic()
    proc = _run_up(home, log, "--port", "0", "--ls-port", "0")
    try:
        _wait_ready(proc, log, 600)
        ready = time.monotonic() - t0
        out = log.read_text()
        ls_url = re.search(r"Label Studio\s+(http://\S+)", out).group(1)  # type: ignore[union-attr]
        token = re.search(r"API key\s+(\S+)", out).group(1)  # type: ignore[union-attr]
        api_url = re.search(r"al-loop API\s+(http://\S+)/api/projects", out).group(1)  # type: ignore[union-attr]
        api_token = re.search(r"API token\s+(\S+)", out).group(1)  # type: ignore[union-attr]
        assert "password" in out and "username" in out
        with LabelStudioGateway(ls_url, token, timeout=30, retries=1) as gw:
            projects = gw._raw("GET", "api/projects/")["results"]
            demo = [p for p in projects if p["title"] == "NCBI-disease demo"]
            assert len(demo) == 1
            ls_id = int(demo[0]["id"])
            project = gw.get_project(ls_id)
            counts = gw.model_versions(ls_id)
            assert project.model_version and counts.get(project.model_version) == 600, (project, counts)
            assert sum(1 for _ in gw.list_tasks(ls_id)) == 600
        status = ApiClient(api_url, api_token).get("/api/projects")
        assert [p["name"] for p in status["projects"]] == ["NCBI-disease demo"]  # type: ignore[index]
        kids = _stop_up(proc)
        print(f"\n[up] ready after {ready:.1f} s (fresh home; {len(kids)} child processes); stopped cleanly")

        # a second start reuses the demo project (idempotent) and the same ports
        t1 = time.monotonic()
        log2 = tmp_path / "up2.log"
        proc = _run_up(home, log2)
        _wait_ready(proc, log2, 300)
        out2 = log2.read_text()
        assert "reusing project" in out2
        assert re.search(r"al-loop API\s+(http://\S+)/api/projects", out2).group(1) == api_url  # type: ignore[union-attr]
        _stop_up(proc)
        print(f"[up] second start ready after {time.monotonic() - t1:.1f} s, demo project reused")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
