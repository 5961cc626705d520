"""Pool scoring fanned out over two real Celery workers (score queue, real Redis, real MiniLM).

The round runs in the test process with :class:`CeleryShardRunner`; its two shards are scored by two
``al-loop worker --queues score --pool solo`` processes; the selection must equal the one-process one.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from al_loop.rounds import RoundService
from al_loop.rounds.pool_phase import score_pool
from al_loop.rounds.pool_round import PoolSnapshot, ShardJob
from al_loop.store import Store
from al_loop.store.records import payload_from_example
from al_loop.store.repository import unlabelled_id_chunks
from al_loop.strategies import DedupedStrategy, make_strategy
from al_loop.types import Example, TaskKind
from annotator_bridge.settings import Settings
from annotator_bridge.worker.celery_app import make_celery
from annotator_bridge.worker.config import SCORE_QUEUE
from annotator_bridge.worker.shards import CeleryShardRunner, ShardFailed
from tests.bridge import conftest_services
from tests.bridge.conftest_services import al_loop_env, start_worker

redis_server = conftest_services.redis_server  # session fixture: a real redis-server on a free port

TINY_TRAINING = {"max_length": 64, "window_stride": 16, "min_epochs": 1, "max_epochs": 1, "target_steps": 4,
                 "batch_size": 8, "val_fraction": 0.0, "precision": "auto", "inference_batch_size": 64}
SCORE_WORKER_ARGS = ("worker", "--queues", SCORE_QUEUE, "--pool", "solo")


def _trec(shared_data: Path, n: int) -> list[Example]:
    from al_loop.data.readers import dedupe_examples, read_examples

    examples, _ = dedupe_examples(read_examples(shared_data / "trec" / "TREC.train", task=TaskKind.CLASSIFICATION,
                                                format="trec"))
    return examples[300 : 300 + n]


@pytest.mark.integration
@pytest.mark.slow
def test_two_score_workers_select_what_one_process_selects(redis_server: Any, tmp_path: Path,
                                                           shared_data: Path) -> None:
    from al_loop.config import LoopConfig, TrainingConfig
    from al_loop.data.schema import LabelSchema

    env = al_loop_env(tmp_path / "home", redis_server.url_for(6), AL_LOOP_VISIBILITY_TIMEOUT="60")
    settings = Settings.from_env(env)
    settings.ensure_dirs()
    store = Store(settings.database_url)
    data = _trec(shared_data, 32 + 64)
    labels = sorted({lb for ex in data for lb in ex.labels or ()})
    loop = LoopConfig(strategy="least_confidence", batch_size=8, retrain_every=0, score_shards=2, score_chunk_size=8)
    project = store.create_project("fanout", LabelSchema.build("classification", labels),
                                   training=TrainingConfig(**TINY_TRAINING), loop=loop)
    store.add_items(project.id, data, "pool")
    for ex in data[:32]:
        store.record_label(project.id, ex.item_id, f"k:{ex.item_id}", payload=payload_from_example(ex), source="test")
    app = make_celery(settings)
    workers = [start_worker(SCORE_WORKER_ARGS, env, tmp_path / "logs" / f"score-{i}.log", timeout=120)
               for i in range(2)]
    try:
        assert CeleryShardRunner(app, inspect_timeout=5.0).available()  # the score workers answer
        rounds = RoundService(store, None, settings.artifacts_dir, shard_runner=CeleryShardRunner(app, timeout=120))
        rnd = rounds.create_round(project.id)
        done = rounds.run_round(rnd.id).round
        logs = [w.log() for w in workers]
        assert done.status == "succeeded", f"{done.error}\n" + "\n".join(lg[-3000:] for lg in logs)
        # each worker scored one shard (solo pool, prefetch 1: the second shard waits for the idle worker)
        assert all(f"of round {rnd.id}: 32 items scored" in lg for lg in logs), [lg[-2000:] for lg in logs]
        sharded = [(s.item_id, s.rank) for s in store.get_scores(rnd.id)]
        assert len(sharded) == 64 and sum(s.selected for s in store.get_scores(rnd.id)) == 8

        # the same pool scored in one process with the same model version, seed and strategy
        version = store.get_version(int(done.model_version_id or 0))
        model = rounds.factory.load(version.artifact_path, project.training)
        strategy: Any = DedupedStrategy(make_strategy("least_confidence", "classification"), loop.dedupe_threshold)
        base_embed = None
        if done.metrics.get("train", {}).get("learner") != "head":
            base_embed = partial(rounds._base_embeddings, project, rounds._resolve_base(project).path)
        folder = tmp_path / "one-process"
        snapshot = PoolSnapshot.write(folder, unlabelled_id_chunks(store, project.id))
        texts = {it.item_id: it.text for it in store.get_items(project.id, split="pool")}
        one = score_pool(model, strategy, project.schema, dataclasses.replace(loop, score_shards=1), snapshot, folder,
                         8, [ex.text for ex in data[:32]], np.random.default_rng([rnd.seed, rnd.index]),
                         lambda ids: [texts[i] for i in ids], timings={}, base_embed=base_embed)
        assert [(s.item_id, s.rank) for s in one] == sharded

        # a shard that fails fails the wait with its error (here: a model artifact that is not there)
        bad = ShardJob(rnd.id, project.id, str(tmp_path / "bad"), 0, 0, 4, 4, {"base_embed": False},
                       str(tmp_path / "missing-model"))
        Path(bad.folder).mkdir()
        with pytest.raises(ShardFailed, match="score shard 1/1 failed"):
            CeleryShardRunner(app, timeout=60)([bad], lambda _done: None)
    finally:
        for w in workers:
            w.stop()
        store.dispose()


@pytest.mark.integration
def test_without_a_score_worker_the_runner_says_so(redis_server: Any, tmp_path: Path) -> None:
    """The local stack's workers (default and train queues, no score worker) answer the queue question: the
    round then scores its shards itself instead of waiting for the timeout."""
    env = al_loop_env(tmp_path / "home", redis_server.url_for(8))
    settings = Settings.from_env(env)
    settings.ensure_dirs()
    app = make_celery(settings)
    worker = start_worker(("worker", "--queues", "default"), env, tmp_path / "logs" / "default.log", timeout=120)
    try:
        assert not CeleryShardRunner(app, inspect_timeout=5.0).available()
    finally:
        worker.stop()
    assert CeleryShardRunner(app, inspect_timeout=0.5).available()  # nobody answers: let the wait decide


def test_shards_nobody_scores_fail_the_wait_naming_the_queue(tmp_path: Path) -> None:
    """No worker consumes the score queue (file-system broker, no worker): the round's wait ends with a message
    that says what to start; a shard's failure marker ends it with the shard's error."""
    settings = Settings.from_env({"AL_LOOP_HOME": str(tmp_path / "home")})
    settings.ensure_dirs()
    app = make_celery(settings)
    jobs = [ShardJob(7, 1, str(tmp_path), i, 2 * i, 2 * i + 2, 4, {}) for i in range(2)]
    beats: list[int] = []
    with pytest.raises(ShardFailed, match=r"2 of 2 score shards made no progress .*--queues score"):
        CeleryShardRunner(app, timeout=0.5, poll=0.05)(jobs, beats.append)
    assert beats and set(beats) == {0}  # the round kept heartbeating while it waited

    # a marker left by a failing shard (written after the wait started: stale ones are cleared when it starts)
    def fail_later() -> None:
        time.sleep(0.3)
        jobs[1].failed_marker.write_text("ModelLoadError: no model at /nowhere")

    thread = threading.Thread(target=fail_later)
    thread.start()
    with pytest.raises(ShardFailed, match="score shard 2/2 failed: ModelLoadError: no model at /nowhere"):
        CeleryShardRunner(app, timeout=30, poll=0.05)(jobs, beats.append)
    thread.join()
