"""Fault injection on the real stack: real Label Studio, a real redis-server (append-only file, as in
docker-compose.yml), real Celery worker processes and the real ``al-loop serve`` over HTTP.

(a) the al-loop server is down while an annotator keeps labelling in Label Studio: the next round's
    reconciliation has every label and the count equals Label Studio's;
(b) Redis restarted with ingest events and a round queued: both resume, the round runs once, a second
    round is refused while it is queued, no label is lost (webhooks answered 503 while Redis was down
    come back through reconciliation);
(c) Label Studio down during the push: the automatic retry lands the predictions once it is back, no
    duplicates;
(d) annotations arriving while a round trains count toward the next round, never the running snapshot;
(e) 20 concurrent round requests for one project: exactly one round.
The SIGKILL-mid-round case is ``tests/bridge/test_worker.py::test_c_worker_killed_mid_training_round_is_redelivered``.
Every wait is on a condition with a generous timeout; nothing here asserts a duration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from al_loop.data.readers import dedupe_examples, read_examples
from al_loop.store import Store
from al_loop.types import Example, TaskKind
from annotator_bridge.client import ApiError
from annotator_bridge.labelstudio.gateway import LabelStudioGateway
from annotator_bridge.labelstudio.local import port_is_free
from tests.bridge.conftest_services import (
    WORKER_DEFAULT_ARGS,
    WORKER_TRAIN_ARGS,
    ALProcess,
    Annotator,
    ApiClient,
    RedisServer,
    al_loop_env,
    free_port,
    start_server,
    start_worker,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

API_TOKEN = "faults-api-token-0123456789abcdef"
WEBHOOK_SECRET = "faults-webhook-secret-0123456789"
HEAD = {"learner": "head", "max_length": 64, "inference_batch_size": 64}
# fine-tuning long enough (tens of seconds) to act while the round trains
LONG = {"learner": "finetune", "max_length": 64, "batch_size": 8, "target_steps": 60, "min_epochs": 1,
        "max_epochs": 200, "inference_batch_size": 64}


class AofRedis(RedisServer):
    """``redis-server`` with the append-only file (``appendfsync always``): a restart keeps the queues."""

    def start(self) -> AofRedis:
        import subprocess

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(self.ping, 30, 0.05, "redis-server to answer PING")
        return self


class Faults:
    def __init__(self, home: Path, ls: Any, redis: AofRedis) -> None:
        self.home, self.ls, self.redis = home, ls, redis
        self.port = free_port()
        self.env = al_loop_env(home, redis.url_for(0), AL_LOOP_API_TOKEN=API_TOKEN,
                               AL_LOOP_WEBHOOK_SECRET=WEBHOOK_SECRET, AL_LOOP_VISIBILITY_TIMEOUT="60",
                               AL_LOOP_PUBLIC_URL=f"http://127.0.0.1:{self.port}",
                               LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.api_key)
        self.procs: dict[str, ALProcess] = {}
        self.api = ApiClient(f"http://127.0.0.1:{self.port}", API_TOKEN)
        self.gw = LabelStudioGateway(ls.url, ls.api_key, timeout=30, retries=2)
        self.store = Store(self.env["AL_LOOP_DATABASE_URL"])
        self.n = 0

    def start(self, name: str) -> ALProcess:
        log = self.home / "logs" / f"{name}-{self.n}.log"
        self.n += 1
        if name == "serve":
            proc, _ = start_server(self.env, log, self.port)
        else:
            proc = start_worker(WORKER_DEFAULT_ARGS if name == "default" else WORKER_TRAIN_ARGS, self.env, log)
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        self.procs.pop(name).stop()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log()[-3000:]}" for n, p in self.procs.items())

    def project(self, name: str, pool: list[Example], training: dict[str, Any], round0: bool = True) -> tuple[
            int, int]:
        labels = sorted({lb for ex in pool for lb in ex.labels or ()})
        project = self.api.post("/api/projects", {
            "name": name, "task": "classification", "labels": labels, "label_studio": {"title": name},
            "loop": {"strategy": "least_confidence", "seed_size": 8, "batch_size": 8, "retrain_every": 0},
            "training": training})["project"]
        pid = int(project["id"])
        self.api.post(f"/api/projects/{pid}/items", {"items": [{"id": ex.item_id, "text": ex.text} for ex in pool],
                                                     "start_round": round0})
        if round0:
            self.wait_round(pid, 0, push="done")
        return pid, int(project["integration"]["ls_project_id"])

    def rounds(self, pid: int) -> list[dict[str, Any]]:
        return list(self.api.get(f"/api/projects/{pid}/rounds")["rounds"])

    def wait_round(self, pid: int, index: int, push: str | None = None, timeout: float = 600) -> dict[str, Any]:
        def done() -> Any:
            rnd = next((r for r in self.rounds(pid) if r["index"] == index), None)
            if rnd is None:
                return None
            if rnd["status"] in ("failed", "cancelled"):
                raise AssertionError(f"round {index}: {rnd['status']}: {rnd['error']}\n{self.logs()}")
            if rnd["status"] != "succeeded":
                return None
            return rnd if push is None or rnd["push_status"] == push else None

        return wait_until(done, timeout, 0.25, f"round {index} of project {pid}")  # type: ignore[no-any-return]

    def labelled(self, pid: int) -> int:
        return int(self.api.get(f"/api/projects/{pid}/status")["labels"]["labelled"])

    def ls_annotated(self, ls_id: int) -> int:
        return sum(len(t.annotations) for t in self.gw.list_annotated_tasks(ls_id))

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.gw.close()
        self.store.dispose()


@pytest.fixture(scope="module")
def faults(label_studio: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    redis = AofRedis(tmp_path_factory.mktemp("faults-redis")).start()
    f = Faults(tmp_path_factory.mktemp("faults-home"), label_studio, redis)
    try:
        for name in ("default", "train", "serve"):
            f.start(name)
        yield f
    finally:
        f.close()
        redis.stop()


_TREC: list[Example] = []


def _pool(shared_data: Path, n: int, offset: int) -> list[Example]:
    if not _TREC:
        data, _ = dedupe_examples(read_examples(shared_data / "trec" / "TREC.train", task=TaskKind.CLASSIFICATION,
                                                format="trec"))
        _TREC.extend(data)
    return _TREC[offset:offset + n]


def _annotator(f: Faults, ls_id: int, pool: list[Example]) -> Annotator:
    return Annotator(f.gw, ls_id, {ex.item_id: ex for ex in pool})


def test_e_twenty_concurrent_round_requests_make_one_round(faults: Faults, shared_data: Path) -> None:
    f = faults
    pool = _pool(shared_data, 40, 0)
    pid, _ = f.project("faults-concurrent", pool, HEAD, round0=False)
    gate = threading.Barrier(20)
    answers: list[int] = []
    lock = threading.Lock()

    def ask() -> None:
        gate.wait()
        try:
            f.api.post(f"/api/projects/{pid}/rounds", {})
            code = 202
        except ApiError as exc:
            code = exc.status
        with lock:
            answers.append(code)

    # no training worker while the requests land: a cold-start round can finish within a second, after which
    # a late request would rightly start the next round; the queued round runs once the worker is back
    f.stop("train")
    try:
        threads = [threading.Thread(target=ask) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        f.start("train")
    assert sorted(answers) == [202] + [409] * 19, (answers, f.rounds(pid))
    f.wait_round(pid, 0, push="done")
    rounds = f.rounds(pid)
    assert len(rounds) == 1 and rounds[0]["attempts"] == 1, rounds


def test_d_labels_arriving_while_a_round_trains_count_toward_the_next(faults: Faults, shared_data: Path) -> None:
    f = faults
    pool = _pool(shared_data, 60, 100)
    pid, ls_id = f.project("faults-during", pool, LONG)
    ann = _annotator(f, ls_id, pool)
    ann.label(12)
    wait_until(lambda: f.labelled(pid) == 12, 120, 0.2, "the first 12 labels")
    rnd = f.api.post(f"/api/projects/{pid}/rounds", {})["round"]
    wait_until(lambda: next(r for r in f.rounds(pid) if r["id"] == rnd["id"])["phase"] == "train", 300, 0.1,
               "round 1 to train")
    ann.label(6)
    wait_until(lambda: f.labelled(pid) == 18, 120, 0.1, "the 6 labels made during training")
    assert next(r for r in f.rounds(pid) if r["id"] == rnd["id"])["phase"] == "train", \
        "round 1 stopped training before the new labels landed; lengthen LONG"
    r1 = f.wait_round(pid, 1)
    assert r1["n_labels"] == 12, r1  # the running snapshot never saw the 6
    assert f.api.get(f"/api/projects/{pid}/status")["new_labels_since_last_round"] == 6
    f.api.post(f"/api/projects/{pid}/rounds", {})
    r2 = f.wait_round(pid, 2)
    assert r2["n_labels"] == 18, r2


def test_a_server_down_while_annotating_then_reconciled(faults: Faults, shared_data: Path) -> None:
    f = faults
    pool = _pool(shared_data, 40, 200)
    pid, ls_id = f.project("faults-server-down", pool, HEAD)
    ann = _annotator(f, ls_id, pool)
    ann.label(3)
    wait_until(lambda: f.labelled(pid) == 3, 120, 0.2, "labels made while the server is up")
    f.stop("serve")
    ann.label(9)  # Label Studio's webhooks fail: nobody listens
    assert len(f.store.labelled_examples(pid)) == 3
    f.start("serve")
    f.api.post(f"/api/projects/{pid}/rounds", {})
    r1 = f.wait_round(pid, 1)
    assert f.ls_annotated(ls_id) == 12
    assert r1["n_labels"] == 12 == f.labelled(pid) == len(f.store.labelled_examples(pid)), r1


def test_c_label_studio_down_during_the_push_then_retried(faults: Faults, shared_data: Path) -> None:
    f = faults
    pool = _pool(shared_data, 40, 300)
    pid, ls_id = f.project("faults-ls-down", pool, HEAD, round0=False)
    ls = f.ls
    port, data = ls.port, ls.data_dir
    ls.stop()
    try:
        f.api.post(f"/api/projects/{pid}/rounds", {})
        failed = wait_until(lambda: next((r for r in f.rounds(pid) if r["push_status"] == "failed"), None), 300,
                            0.25, "the push to fail while Label Studio is down")
        assert failed["status"] == "succeeded"
    finally:
        # the harness binds the port to check it: wait out the TIME_WAIT sockets of the stopped server
        wait_until(lambda: port_is_free(ls.host, port), 180, 0.5, f"port {port} to be free again")
        ls.start(data, port=port, username=ls.username, password=ls.password, user_token=ls.user_token)
    r0 = f.wait_round(pid, 0, push="done", timeout=900)  # the task's own retry, nobody calls /push
    tag = r0["version_tag"]
    assert f.gw.model_versions(ls_id).get(tag) == len(pool)  # one prediction per task: no duplicates
    assert f.gw.get_project(ls_id).model_version == tag


def test_b_redis_restart_with_queued_ingest_and_round(faults: Faults, shared_data: Path) -> None:
    f = faults
    pool = _pool(shared_data, 40, 400)
    pid, ls_id = f.project("faults-redis", pool, HEAD)
    ann = _annotator(f, ls_id, pool)
    f.stop("default")
    f.stop("train")
    ann.label(8)  # acknowledged by the server, queued in Redis: no worker consumes them
    import redis as redis_lib

    r = redis_lib.Redis(port=f.redis.port)
    wait_until(lambda: r.llen("al_loop:ingest:events") >= 8, 60, 0.1, "8 queued ingest events")
    queued = f.api.post(f"/api/projects/{pid}/rounds", {})["round"]
    assert queued["status"] == "pending"
    f.redis.stop()
    ann.label(2)  # Redis down: the server answers 503, Label Studio drops the webhooks
    f.redis.start()
    r = redis_lib.Redis(port=f.redis.port)
    with pytest.raises(ApiError) as refused:
        f.api.post(f"/api/projects/{pid}/rounds", {})
    assert refused.value.status == 409  # the queued round still holds the project
    assert r.llen("al_loop:ingest:events") >= 8  # the restart kept the queue
    f.start("default")
    wait_until(lambda: f.labelled(pid) >= 8, 120, 0.2, "the queued events to be ingested after the restart")
    f.start("train")
    r1 = f.wait_round(pid, 1, push="done")
    assert r1["id"] == queued["id"] and r1["attempts"] == 1, r1
    assert r1["n_labels"] == 10 == f.ls_annotated(ls_id), r1  # the 2 dropped webhooks came back by reconcile
    assert len(f.rounds(pid)) == 2


def test_the_drain_keeps_an_interrupted_batch_and_the_order(tmp_path: Path) -> None:
    """The ingest list on a real redis-server: a batch interrupted by Label Studio stays queued; order per project."""
    from annotator_bridge.labelstudio.connection import LabelStudioUnavailable
    from annotator_bridge.worker.ingest_queue import IngestQueue, drain

    server = RedisServer(tmp_path / "redis").start()
    queue = IngestQueue(server.url)
    try:
        tokens = [queue.push(1 if n < 5 else 2, {"n": n}) for n in range(7)]
        assert tokens[0] is not None and tokens[1:] == [None] * 6  # one drain for the whole burst
        seen: list[tuple[int, list[int]]] = []

        def down(project_id: int, payloads: Any) -> None:
            raise LabelStudioUnavailable("down")

        with pytest.raises(LabelStudioUnavailable):
            drain(queue, down, tokens[0], linger=0)
        assert queue.depth() == 7
        assert queue.push(3, {"n": 7}) is None  # the interrupted drain still holds the lock (its retry comes)
        assert drain(queue, lambda pid, p: seen.append((pid, [x["n"] for x in p])), tokens[0], batch_size=3,
                     linger=0) == 8
        assert sorted(seen) == [(1, [0, 1, 2]), (1, [3, 4]), (2, [5]), (2, [6]), (3, [7])]
        assert queue.depth() == 0 and queue.push(1, {"n": 8}) is not None  # released: the next event schedules
        assert not queue.claim("someone-else")
        handed: list[str] = []  # a long drain hands over to a new token (a new task) and ends
        for n in range(4):
            queue.push(4, {"n": 10 + n})
        assert drain(queue, lambda pid, p: None, tokens[0], batch_size=2, linger=0, max_seconds=0,
                     handover=handed.append) == 0  # tokens[0] no longer holds the lock
        token = str(queue.redis.get("al_loop:ingest:drain").decode())
        assert drain(queue, lambda pid, p: None, token, batch_size=2, linger=0, max_seconds=0,
                     handover=handed.append) == 0 and len(handed) == 1 and queue.depth() == 5
        assert not queue.claim(token) and queue.claim(handed[0])
        assert drain(queue, lambda pid, p: None, handed[0], linger=0) == 5 and queue.depth() == 0
    finally:
        queue.close()
        server.stop()


def test_a_round_whose_task_was_lost_is_dispatched_again(tmp_path: Path) -> None:
    """Redis restarted WITHOUT its append-only file loses a queued round: the next request re-dispatches it."""
    from datetime import timedelta

    from al_loop.data.schema import LabelSchema
    from al_loop.errors import ConflictError
    from al_loop.rounds import RoundService
    from al_loop.store.repository import utcnow
    from annotator_bridge.loop import LoopService
    from annotator_bridge.settings import Settings

    class Lost:
        def __init__(self) -> None:
            self.rounds: list[int] = []

        def run_round(self, project_id: int, round_id: int) -> None:
            self.rounds.append(round_id)  # the message goes nowhere

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    settings = Settings.from_env({"AL_LOOP_HOME": str(tmp_path / "home")})
    lost = Lost()
    shift = [timedelta(0)]
    loop = LoopService(store, None, RoundService(store, stale_after=timedelta(minutes=5)), lost,  # type: ignore[arg-type]
                       settings, clock=lambda: utcnow() + shift[0])
    pid = store.create_project("lost", LabelSchema(TaskKind.CLASSIFICATION, ("a", "b"))).id
    rnd = loop.request_round(pid)
    with pytest.raises(ConflictError):
        loop.request_round(pid)
    assert lost.rounds == [rnd.id]  # pending for seconds: still queued, not dispatched twice
    shift[0] = timedelta(minutes=6)
    with pytest.raises(ConflictError):
        loop.request_round(pid)
    assert lost.rounds == [rnd.id, rnd.id] and len(store.list_rounds(pid)) == 1
    store.dispose()
