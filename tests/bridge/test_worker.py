"""Celery app, tasks and dispatcher.

Unit tests (no services) check the configuration and the tasks' decisions. Integration tests
(marker ``integration``) run a REAL redis-server on a free loopback port and REAL worker
processes started with the same command lines as docker-compose.yml, sharing a temp SQLite
database with the test process, and the real MiniLM (tiny data, max_length 64):
(a) an ingest event round-trips through Redis into the DB, (b) a round runs on the train
queue, (c) a worker SIGKILLed mid-training: the round is redelivered and finishes, (d) a
duplicate round delivery is a no-op.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from al_loop.data.schema import LabelSchema
from al_loop.errors import ConflictError
from al_loop.store import Store
from al_loop.types import Example, TaskKind
from annotator_bridge.commands import serve as serve_cmd
from annotator_bridge.settings import Settings
from annotator_bridge.worker import tasks as tasks_mod
from annotator_bridge.worker.celery_app import (
    INGEST_TASK,
    PUSH_ROUND_TASK,
    RECONCILE_TASK,
    RUN_ROUND_TASK,
    broker_of,
    make_celery,
)
from annotator_bridge.worker.dispatcher import BrokerUnavailable, CeleryDispatcher
from tests.bridge import conftest_services
from tests.bridge.conftest_services import (
    WORKER_DEFAULT_ARGS,
    WORKER_TRAIN_ARGS,
    ALProcess,
    al_loop_env,
    start_worker,
    wait_until,
)

redis_server = conftest_services.redis_server  # session fixture: a real redis-server on a free port

REPO = Path(__file__).resolve().parents[2]


def _settings(tmp_path: Path, **env: str) -> Settings:
    base = {"AL_LOOP_HOME": str(tmp_path / "home"), "AL_LOOP_BROKER_URL": "redis://127.0.0.1:9/0"}
    base.update(env)
    return Settings.from_env(base)


# ----------------------------------------------------------------------------------------- unit
def test_import_has_no_side_effects() -> None:
    code = (
        "import sys, socket\n"
        "def no(*a, **k): raise AssertionError('network at import')\n"
        "socket.socket.connect = no\n"
        "import annotator_bridge.worker, annotator_bridge.worker.celery_app as c, annotator_bridge.worker.tasks, "
        "annotator_bridge.worker.dispatcher, annotator_bridge.commands.serve, annotator_bridge.commands.up, "
        "annotator_bridge.stack\n"
        "assert c._app is None\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_celery_config(tmp_path: Path) -> None:
    app = make_celery(_settings(tmp_path, AL_LOOP_VISIBILITY_TIMEOUT="9000", AL_LOOP_TRAIN_QUEUE="gpu"))
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 9000
    assert conf.broker_url == "redis://127.0.0.1:9/0"
    assert conf.result_backend is None and conf.task_ignore_result is True
    assert {q.name for q in conf.task_queues} == {"default", "gpu"}
    assert conf.task_routes[RUN_ROUND_TASK]["queue"] == "gpu"
    for name in (INGEST_TASK, PUSH_ROUND_TASK, RECONCILE_TASK):
        assert conf.task_routes[name]["queue"] == "default"
        assert name in app.tasks
    push = app.tasks[PUSH_ROUND_TASK]
    assert push.max_retries and push.retry_backoff and push.retry_jitter
    assert "LabelStudioUnavailable" in {e.__name__ for e in push.autoretry_for}


def test_filesystem_broker_without_redis(tmp_path: Path) -> None:
    settings = Settings.from_env({"AL_LOOP_HOME": str(tmp_path / "home")})
    url, options = broker_of(settings)
    assert url == "filesystem://"
    assert Path(options["data_folder_in"]) == settings.broker_dir / "in"
    assert options["data_folder_in"] == options["data_folder_out"]
    assert Path(options["processed_folder"]).is_dir()
    assert Path(options["control_folder"]) == settings.broker_dir / "control"  # never ./control in the cwd


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any], str]] = []


def test_dispatcher_routes_ids_to_queues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_celery(_settings(tmp_path))
    rec = _Recorder()
    for name in (INGEST_TASK, RUN_ROUND_TASK, PUSH_ROUND_TASK, RECONCILE_TASK):
        task = app.tasks[name]
        monkeypatch.setattr(task, "apply_async",
                            lambda args, queue, routing_key, _n=name: rec.sent.append((_n, args, queue)))
    d = CeleryDispatcher(app)
    d.ingest_queue = None  # as with the filesystem broker: one ingest task per event (Redis: test_faults.py)
    d.ingest_event(3, {"action": "ANNOTATION_CREATED"})
    d.run_round(3, 7)
    d.push_round(7)
    d.reconcile(3)
    assert rec.sent == [(INGEST_TASK, [3, {"action": "ANNOTATION_CREATED"}], "default"),
                        (RUN_ROUND_TASK, [3, 7], "train"),
                        (PUSH_ROUND_TASK, [7], "default"),
                        (RECONCILE_TASK, [3], "default")]


def test_dispatcher_fails_fast_without_broker(tmp_path: Path) -> None:
    from annotator_bridge.labelstudio.local import free_port

    d = CeleryDispatcher(make_celery(_settings(tmp_path, AL_LOOP_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")))
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        d.run_round(1, 1)
    assert time.monotonic() - t0 < 10


class _FakeLoop:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.error = error

    def execute_round(self, round_id: int) -> None:
        self.calls.append(("execute_round", round_id))
        if self.error:
            raise self.error

    def handle_event(self, project_id: int, payload: dict[str, Any]) -> None:
        self.calls.append(("handle_event", (project_id, payload)))


def _fake_services(tmp_path: Path, loop: _FakeLoop) -> tuple[tasks_mod.WorkerServices, int, int]:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    project = store.create_project("p", LabelSchema(TaskKind.CLASSIFICATION, ("a", "b")))
    rnd = store.create_round(project.id, trigger="api", strategy="random", batch_size=1, seed=1)
    return tasks_mod.WorkerServices(settings=None, store=store, rounds=None, loop=loop), project.id, rnd.id  # type: ignore[arg-type]


def test_run_round_task_decisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_celery(_settings(tmp_path))
    loop = _FakeLoop()
    services, pid, rid = _fake_services(tmp_path, loop)
    monkeypatch.setattr(tasks_mod, "_services", services)
    task = app.tasks[RUN_ROUND_TASK]
    task.run(pid, rid)
    assert loop.calls == [("execute_round", rid)]
    task.run(pid + 1, rid)  # wrong project: dropped
    assert len(loop.calls) == 1
    services.store.claim_round(rid, "w1", timedelta(minutes=1))
    services.store.update_round(rid, status="succeeded")
    task.run(pid, rid)  # finished round: no-op
    assert len(loop.calls) == 1
    services.store.dispose()


def test_run_round_task_retries_on_conflict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_celery(_settings(tmp_path))
    loop = _FakeLoop(ConflictError("round 0 is being run by other:1"))
    services, pid, rid = _fake_services(tmp_path, loop)
    monkeypatch.setattr(tasks_mod, "_services", services)
    retries: list[dict[str, Any]] = []

    class _Retry(Exception):
        pass

    task = app.tasks[RUN_ROUND_TASK]

    def fake_retry(**kw: Any) -> Exception:
        retries.append(kw)
        return _Retry()

    monkeypatch.setattr(task, "retry", fake_retry)
    with pytest.raises(_Retry):
        task.run(pid, rid)
    assert retries and 0 < retries[0]["countdown"] < app.conf.al_loop_settings.visibility_timeout
    services.store.dispose()


def test_ingest_task_calls_handle_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_celery(_settings(tmp_path))
    loop = _FakeLoop()
    services, pid, _ = _fake_services(tmp_path, loop)
    monkeypatch.setattr(tasks_mod, "_services", services)
    app.tasks[INGEST_TASK].run(pid, {"action": "X"})
    assert loop.calls == [("handle_event", (pid, {"action": "X"}))]
    services.store.dispose()


def test_worker_argv_defaults() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    serve_cmd.add_parser(sub)
    train = serve_cmd.worker_argv(parser.parse_args(list(WORKER_TRAIN_ARGS)), "train")
    assert train[train.index("--pool") + 1] == "solo" and train[train.index("--concurrency") + 1] == "1"
    renamed = serve_cmd.worker_argv(parser.parse_args(["worker", "--queues", "train"]), "gpu0")
    assert renamed[renamed.index("--queues") + 1] == "gpu0" and renamed[renamed.index("--pool") + 1] == "solo"
    default = serve_cmd.worker_argv(parser.parse_args(list(WORKER_DEFAULT_ARGS)))
    assert default[default.index("--pool") + 1] == "threads"
    score = serve_cmd.worker_argv(parser.parse_args(["worker", "--queues", "score"]))
    assert score[score.index("--pool") + 1] == "solo" and score[score.index("--concurrency") + 1] == "1"
    threads = serve_cmd.worker_argv(parser.parse_args(["worker", "--queues", "score", "--pool", "threads"]))
    assert threads[threads.index("--pool") + 1] == "threads"
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "8000", "--server", "gunicorn"])
    assert args.func is serve_cmd.run_serve and args.port == 8000


# ---------------------------------------------------------------------------------- integration
VISIBILITY_TIMEOUT = 60  # the smallest Settings accepts; rounds here take seconds
TINY_TRAINING = {"max_length": 64, "window_stride": 16, "min_epochs": 1, "max_epochs": 1, "target_steps": 4,
                 "batch_size": 8, "val_fraction": 0.0, "precision": "auto", "inference_batch_size": 64}


class Services:
    """The test process's view of one integration environment (same DB file and broker as the workers)."""

    def __init__(self, home: Path, broker_url: str) -> None:
        self.home = home
        self.env = al_loop_env(home, broker_url, AL_LOOP_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT))
        if not broker_url:
            del self.env["AL_LOOP_BROKER_URL"]
        self.settings = Settings.from_env(self.env)
        self.settings.ensure_dirs()
        self.store = Store(self.settings.database_url)
        self.app = make_celery(self.settings)
        self.dispatcher = CeleryDispatcher(self.app)
        from al_loop.rounds import RoundService
        from annotator_bridge.loop import LoopService

        self.loop = LoopService(self.store, None, RoundService(self.store), self.dispatcher, self.settings)
        self.workers: list[ALProcess] = []

    def worker(self, args: tuple[str, ...], name: str) -> ALProcess:
        w = start_worker(args, self.env, self.home / "logs" / f"{name}-{len(self.workers)}.log")
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.dispatcher.close()
        self.store.dispose()


def _trec(shared_data: Path, n: int, offset: int = 0) -> list[Example]:
    from al_loop.data.readers import dedupe_examples, read_examples

    examples, _ = dedupe_examples(read_examples(shared_data / "trec" / "TREC.train", task=TaskKind.CLASSIFICATION,
                                                format="trec"))
    return examples[offset:offset + n]


def _project(svc: Services, name: str, labelled: list[Example], pool: list[Example],
             training: dict[str, Any] | None = None) -> int:
    labels = sorted({lb for ex in labelled + pool for lb in (ex.labels or ())})
    project = svc.loop.create_project({
        "name": name, "task": "classification", "labels": labels, "label_studio": False,
        "training": training or TINY_TRAINING,
        "loop": {"strategy": "least_confidence", "batch_size": 8, "seed_size": 8, "retrain_every": 0},
    })
    if labelled:
        svc.loop.import_items(project.id, labelled, record_labels=True)
    if pool:
        svc.loop.import_items(project.id, [Example(ex.item_id, ex.text) for ex in pool])
    return project.id


def _wait_round(svc: Services, round_id: int, timeout: float, workers: list[ALProcess]) -> Any:
    def done() -> Any:
        for w in workers:
            if w.proc is not None and w.proc.poll() is not None and w.proc.returncode not in (0, -9):
                raise AssertionError(f"worker died:\n{w.log()[-3000:]}")
        rnd = svc.store.get_round(round_id)
        return rnd if rnd.status in ("succeeded", "failed", "cancelled") else None

    rnd = wait_until(done, timeout, 0.5, f"round {round_id} to finish")
    assert rnd.status == "succeeded", f"round failed: {rnd.error}\n" + "\n".join(w.log()[-3000:] for w in workers)
    return rnd


def _broker_idle(redis_url: str, queues: tuple[str, ...] = ("default", "train")) -> bool:
    import redis

    r = redis.Redis.from_url(redis_url)
    return all(r.llen(q) == 0 for q in queues) and r.hlen("unacked") == 0


@pytest.fixture(scope="module")
def shared_env(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One DB + both workers for tests (a), (b), (d) (worker start-up is paid once)."""
    svc = Services(tmp_path_factory.mktemp("worker-env"), redis_server.url_for(1))
    t0 = time.monotonic()
    svc.worker(WORKER_DEFAULT_ARGS, "worker-default")
    svc.worker(WORKER_TRAIN_ARGS, "worker-train")
    svc.worker_startup = time.monotonic() - t0
    try:
        yield svc
    finally:
        svc.close()


def _annotation_payload(project_id: int, ann_id: int, item: Any, label: str) -> dict[str, Any]:
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": ann_id, "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                                 "value": {"choices": [label]}}],
                       "was_cancelled": False, "updated_at": "2026-11-25T10:00:00.000000Z", "task": 1000 + ann_id,
                       "completed_by": 1},
        "task": {"id": 1000 + ann_id, "data": {"text": item.text, "item_id": item.item_id}},
        "project": {"id": 999},
    }


@pytest.mark.integration
def test_a_ingest_event_round_trips_through_redis(shared_env: Services, shared_data: Path) -> None:
    svc = shared_env
    pool = _trec(shared_data, 10)
    pid = _project(svc, "ingest", [], pool)
    item = svc.store.get_items(pid, [pool[0].item_id])[0]
    label = pool[0].labels[0]
    t0 = time.monotonic()
    svc.dispatcher.ingest_event(pid, _annotation_payload(pid, 1, item, label))

    def recorded() -> Any:
        return [r for r in svc.store.label_records(pid) if r.annotation_key == "ls:1"]

    records = wait_until(recorded, 30, 0.05, "the label to land in the DB")
    latency = time.monotonic() - t0
    assert records[0].payload == {"labels": [label]} and records[0].item_id == item.item_id
    warm = []
    for n in range(2, 7):
        other = svc.store.get_items(pid, [pool[n].item_id])[0]
        t1 = time.monotonic()
        svc.dispatcher.ingest_event(pid, _annotation_payload(pid, n, other, pool[n].labels[0]))
        wait_until(lambda n=n: [r for r in svc.store.label_records(pid) if r.annotation_key == f"ls:{n}"], 30, 0.005,
                   "a label")
        warm.append(time.monotonic() - t1)
    warm.sort()
    print(f"\n[worker] ingest round trip (publish -> Redis -> worker -> SQLite): first {latency * 1000:.0f} ms, "
          f"then median {warm[len(warm) // 2] * 1000:.0f} ms; workers started in {svc.worker_startup:.1f} s")
    # the same event again (webhook redelivered): still one label
    svc.dispatcher.ingest_event(pid, _annotation_payload(pid, 1, item, label))
    wait_until(lambda: _broker_idle(svc.settings.broker_url), 30, 0.1, "the queue to drain")
    assert len(recorded()) == 1
    # the dashboard's probe sees both queues and both workers
    from annotator_bridge.worker.probe import CeleryQueueProbe

    probe = CeleryQueueProbe(svc.app, timeout=2.0)
    assert probe.depth() == {"default": 0, "train": 0}
    workers = probe.workers()
    assert sorted(q for w in workers for q in w["queues"]) == ["default", "train"], workers


@pytest.mark.integration
def test_status_command_shows_the_running_workers(shared_env: Services) -> None:
    """`al-loop status` asks the real broker and the real workers (no probe is patched in)."""
    svc = shared_env
    res = subprocess.run([sys.executable, "-m", "annotator_bridge.cli", "status", "--json"], env=svc.env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    queues = json.loads(res.stdout)["queues"]
    assert queues["available"] is True and queues["error"] is None, queues
    assert set(queues["queues"]) == {"default", "train"}
    assert sorted(q for w in queues["workers"] for q in w["queues"]) == ["default", "train"], queues
    text = subprocess.run([sys.executable, "-m", "annotator_bridge.cli", "status"], env=svc.env, cwd=REPO,
                          capture_output=True, text=True, timeout=60).stdout
    assert "workers (2):" in text and "queues waiting: default 0, train 0" in text, text


@pytest.mark.integration
def test_concurrent_rejections_through_the_real_worker(shared_env: Services, shared_data: Path) -> None:
    """Bad-label webhooks ingested concurrently by the default worker's threads: every rejection is kept."""
    svc = shared_env
    pool = _trec(shared_data, 20, offset=40)
    pid = _project(svc, "rejections", [], pool)
    items = svc.store.get_items(pid)
    for n in range(40):
        svc.dispatcher.ingest_event(pid, _annotation_payload(pid, 5000 + n, items[n % len(items)], f"BAD{n}"))
    wait_until(lambda: svc.store.count_rejected(pid) >= 40 and _broker_idle(svc.settings.broker_url), 60, 0.1,
               "the rejections to be recorded")
    assert svc.store.count_rejected(pid) == 40
    assert svc.store.labelled_examples(pid) == []


@pytest.mark.integration
@pytest.mark.slow
def test_b_round_runs_on_the_train_queue_then_d_duplicates_are_no_ops(shared_env: Services,
                                                                       shared_data: Path) -> None:
    svc = shared_env
    data = _trec(shared_data, 72, offset=100)
    pid = _project(svc, "round", data[:32], data[32:])
    t0 = time.monotonic()
    rnd = svc.loop.request_round(pid, "api")
    done = _wait_round(svc, rnd.id, 300, svc.workers)
    print(f"\n[worker] round with real MiniLM (32 labels, 40 pool): {time.monotonic() - t0:.1f} s, "
          f"timings {done.timings}")
    assert done.version_tag and done.model_version_id is not None
    assert done.attempts == 1
    assert len(svc.store.get_scores(rnd.id)) == 40
    wait_until(lambda: svc.store.get_round(rnd.id).push_status == "skipped", 30, 0.2, "the push task (no LS)")
    versions = svc.store.list_versions(pid)
    assert len(versions) == 1 and Path(versions[0].artifact_path).is_dir()

    # (d) the same round delivered twice more: no-ops
    train_log = svc.workers[1]
    before = train_log.log().count("duplicate delivery ignored")
    svc.dispatcher.run_round(pid, rnd.id)
    svc.dispatcher.run_round(pid, rnd.id)
    wait_until(lambda: train_log.log().count("duplicate delivery ignored") >= before + 2, 60, 0.2,
               "both duplicates to be consumed")
    wait_until(lambda: _broker_idle(svc.settings.broker_url), 30, 0.1, "the queues to drain")
    again = svc.store.get_round(rnd.id)
    assert (again.attempts, again.finished_at, again.version_tag) == (done.attempts, done.finished_at,
                                                                      done.version_tag)
    assert len(svc.store.list_versions(pid)) == 1


@pytest.mark.integration
@pytest.mark.slow
def test_c_worker_killed_mid_training_round_is_redelivered(redis_server: Any, tmp_path: Path,
                                                           shared_data: Path) -> None:
    svc = Services(tmp_path / "home", redis_server.url_for(2))
    try:
        svc.worker(WORKER_DEFAULT_ARGS, "worker-default")
        first = svc.worker(WORKER_TRAIN_ARGS, "worker-train")
        data = _trec(shared_data, 120, offset=300)
        long_training = {**TINY_TRAINING, "max_epochs": 4, "target_steps": 40}  # 40 steps: long enough to kill
        pid = _project(svc, "killed", data[:80], data[80:], long_training)
        rnd = svc.loop.request_round(pid, "api")

        def training() -> bool:
            r = svc.store.get_round(rnd.id)
            return r.status == "running" and r.phase == "train" and r.progress > 0.06

        wait_until(training, 180, 0.1, "the round to be training")
        first.kill()
        killed_at = time.monotonic()
        mid = svc.store.get_round(rnd.id)
        assert mid.status == "running" and mid.phase == "train", "the worker was not killed mid-training"
        assert not _broker_idle(svc.settings.broker_url, ("train",)), "the round must still be unacknowledged"

        svc.worker(WORKER_TRAIN_ARGS, "worker-train")
        done = _wait_round(svc, rnd.id, 400, svc.workers[2:])
        print(f"\n[worker] killed mid-training; redelivered and finished {time.monotonic() - killed_at:.0f} s "
              f"after the kill (visibility timeout {VISIBILITY_TIMEOUT} s)")
        assert done.attempts == 2 and done.owner != mid.owner
        assert len(svc.store.get_scores(rnd.id)) == 40
        assert len(svc.store.list_versions(pid)) == 1
        assert len(svc.store.labelled_examples(pid)) == 80  # nothing lost
        wait_until(lambda: _broker_idle(svc.settings.broker_url), 60, 0.2, "the queues to drain")
    finally:
        svc.close()


@pytest.mark.integration
def test_filesystem_broker_without_redis_round_trips(tmp_path: Path, shared_data: Path) -> None:
    """`al-loop up` without redis-server: the filesystem queue carries events to a real worker process."""
    svc = Services(tmp_path / "home", "")
    try:
        assert svc.settings.broker_url == "filesystem://"
        svc.worker(WORKER_DEFAULT_ARGS, "worker-default")
        pool = _trec(shared_data, 5)
        pid = _project(svc, "fs", [], pool)
        item = svc.store.get_items(pid, [pool[0].item_id])[0]
        t0 = time.monotonic()
        svc.dispatcher.ingest_event(pid, _annotation_payload(pid, 7, item, pool[0].labels[0]))
        wait_until(lambda: [r for r in svc.store.label_records(pid) if r.annotation_key == "ls:7"], 30, 0.01,
                   "the label to land in the DB")
        print(f"\n[worker] filesystem broker ingest round trip: {(time.monotonic() - t0) * 1000:.0f} ms")
        from annotator_bridge.worker.probe import CeleryQueueProbe

        assert CeleryQueueProbe(svc.app).depth() == {"default": 0, "train": 0}
        assert not (REPO / "control").exists() and (svc.settings.broker_dir / "control").is_dir()
    finally:
        svc.close()
