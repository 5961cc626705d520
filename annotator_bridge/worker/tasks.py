"""Thin Celery tasks: they take ids, call one ``LoopService`` method and decide about retries.

The tasks are module-level ``shared_task`` functions (bound to every al-loop app); they read
their settings from the executing app's configuration (``app.conf.al_loop_settings`` and the
retry figures, see :mod:`annotator_bridge.worker.config`).

Each worker process builds its services once (``get_services``, cached; built when the worker
reports ready, or on the first task): a Store on ``AL_LOOP_DATABASE_URL``, a RoundService with
the real ``TextModel`` factory (torch is imported only when a round trains), a Label Studio
gateway factory and the LoopService. Nothing is built at import time and nothing crosses a
``fork``: the training worker runs the solo (or threads) pool, so CUDA is initialised in the
process that uses it.

Retry policy:

* ``run_round`` (train queue): a round owned by another *live* worker (ConflictError from the
  claim) is retried after ``countdown`` seconds (shorter than the visibility timeout) until the
  owner finishes (then the retry is a no-op) or its heartbeat goes stale (then it is taken
  over). A finished round is a no-op, so a duplicate or redelivered task does nothing.
* ``run_adaptation`` (train queue): a project's pool-adaptive pretraining; never retried (a failure is
  recorded on the adaptation; a redelivered one finds it started and leaves it).
* ``score_shard`` (score queue): one shard of a round's pool (see :mod:`annotator_bridge.worker.shards`);
  never retried: an error is left for the waiting round (which fails with it); a redelivered shard
  (its worker died) finds its result on disk or scores again.
* ``push_round`` / ``reconcile`` / ``ingest_event`` / ``drain_ingest``: retried on
  ``LabelStudioUnavailable`` with exponential backoff (capped at 5 min, with jitter), at most
  ``MAX_LS_RETRIES`` times.

Ingest with a Redis broker: ``drain_ingest`` applies the webhook events waiting in the ingest
list in batches (one transaction per project and batch; see
:mod:`annotator_bridge.worker.ingest_queue`); ``ingest_event`` (one event per task) serves the
filesystem broker. A worker that starts schedules a drain when events are waiting.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, shared_task
from celery.signals import worker_ready

from al_loop.errors import ConflictError
from al_loop.rounds.pool_round import ShardJob
from al_loop.rounds.service import RoundService
from al_loop.states import PushStatus
from al_loop.store.repository import Store
from annotator_bridge.labelstudio.connection import LabelStudioUnavailable
from annotator_bridge.loop import LoopService, label_studio_gateway_factory
from annotator_bridge.settings import Settings
from annotator_bridge.worker.config import (
    ADAPT_TASK,
    DRAIN_INGEST_TASK,
    IMPORT_TASK,
    INGEST_TASK,
    MAX_ROUND_RETRIES_KEY,
    PUSH_ROUND_TASK,
    RECONCILE_TASK,
    RETRY_COUNTDOWN_KEY,
    RUN_ROUND_TASK,
    SCORE_SHARD_TASK,
    SETTINGS_KEY,
    stale_after_of,
)
from annotator_bridge.worker.dispatcher import CeleryDispatcher
from annotator_bridge.worker.ingest_queue import drain
from annotator_bridge.worker.shards import CeleryShardRunner, record_shard_failure

log = logging.getLogger("annotator_bridge.worker")

MAX_LS_RETRIES = 8
LS_BACKOFF_MAX = 300
LS_RETRY: dict[str, Any] = {
    "autoretry_for": (LabelStudioUnavailable,),
    "retry_backoff": 2,
    "retry_backoff_max": LS_BACKOFF_MAX,
    "retry_jitter": True,
    "max_retries": MAX_LS_RETRIES,
}


DRAIN_RETRY_FOR = (LabelStudioUnavailable, redis.ConnectionError, redis.TimeoutError)
"""A drain interrupted by Label Studio or by Redis (a restart) is retried; its batch is still in the list."""


@dataclass
class WorkerServices:
    settings: Settings
    store: Store
    rounds: RoundService
    loop: LoopService
    dispatcher: CeleryDispatcher | None = None


_services: WorkerServices | None = None
_services_lock = threading.Lock()


def settings_of(app: Celery) -> Settings:
    """The settings an al-loop app was made with (``app.conf.al_loop_settings``)."""
    settings = app.conf.get(SETTINGS_KEY)
    if not isinstance(settings, Settings):
        raise RuntimeError("this Celery app was not made by annotator_bridge.worker.celery_app.make_celery")
    return settings


def build_services(settings: Settings, app: Celery) -> WorkerServices:
    """Store + RoundService (real model factory) + LoopService dispatching through ``app``.

    The Label Studio gateway is made on first use (a project without Label Studio never needs it).
    """
    store = Store(settings.database_url)
    rounds = RoundService(
        store,
        None,  # the real TextModel factory, imported (with torch) when a round first needs a model
        settings.artifacts_dir,
        owner=f"{socket.gethostname()}:{os.getpid()}",
        stale_after=stale_after_of(settings),
        # a round with loop.score_shards > 1 fans its pool scoring out to the score queue; a shard that makes
        # no progress for the visibility timeout (after which Redis would hand it to another worker) fails it
        shard_runner=CeleryShardRunner(app, timeout=float(max(60, settings.visibility_timeout))),
    )
    dispatcher = CeleryDispatcher(app)
    loop = LoopService(store, label_studio_gateway_factory(settings), rounds, dispatcher, settings)
    return WorkerServices(settings=settings, store=store, rounds=rounds, loop=loop, dispatcher=dispatcher)


def get_services(app: Celery) -> WorkerServices:
    """This process's services, built on first use (one Store / engine per process)."""
    global _services
    if _services is None:
        with _services_lock:
            if _services is None:
                _services = build_services(settings_of(app), app)
    return _services


def reset_services() -> None:
    """Forget the cached services (tests; after a fork)."""
    global _services
    with _services_lock:
        if _services is not None:
            _services.store.dispose()
            if _services.dispatcher is not None:
                _services.dispatcher.close()
        _services = None


@worker_ready.connect(weak=False, dispatch_uid="al_loop.worker.warm_up")
def _warm_up(sender: Any = None, **_: Any) -> None:
    """``worker_ready``: build the services before the first task (no torch: that loads with the first round)."""
    app = getattr(sender, "app", None)
    if app is not None and app.conf.get(SETTINGS_KEY) is not None:
        try:
            get_services(app)
        except Exception:  # the first task will raise it with context
            log.exception("could not build the worker's services")
            return
        lower_training_priority(app)
        kick_ingest(app)


TRAIN_NICENESS = 10
"""How much a worker of the train queue lowers its CPU priority (Linux nice; 0 = unchanged)."""


def lower_training_priority(app: Celery) -> int:
    """A train-queue worker gives the CPU to the web process and the ingest worker first (webhook acks stay
    fast while a round trains on the same cores); returns the process's new niceness. Set at start-up, before
    torch makes its threads (they inherit it); a GPU round barely notices. ``AL_LOOP_TRAIN_CPU_PRIORITY``:
    ``nice`` (niceness +10), ``idle`` (SCHED_IDLE: the round runs only on CPU time nothing else wants) or
    ``normal``."""
    settings = settings_of(app)
    queues = set(getattr(app.amqp.queues, "consume_from", None) or ())
    if settings.train_cpu_priority == "normal" or TRAIN_NICENESS <= 0 or settings.train_queue not in queues:
        return os.nice(0)
    try:
        niceness = os.nice(TRAIN_NICENESS)
    except OSError as exc:
        log.warning("could not lower the training worker's priority: %s", exc)
        return os.nice(0)
    policy = f"niceness {niceness}"
    if settings.train_cpu_priority == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            policy += ", SCHED_IDLE"
        except (AttributeError, OSError) as exc:  # not Linux, or refused
            log.warning("could not set the training worker to SCHED_IDLE: %s", exc)
    log.info("training worker: CPU %s (the web process and ingest come first)", policy)
    return niceness


def kick_ingest(app: Celery) -> bool:
    """Schedule a drain when webhook events wait in the ingest list and no drain holds its lock."""
    dispatcher = get_services(app).dispatcher
    queue = dispatcher.ingest_queue if dispatcher is not None else None
    if dispatcher is None or queue is None:
        return False
    try:
        token = queue.schedule()
        if token is not None:
            dispatcher.send_drain(token)
            log.info("ingest queue: %d events waiting; drain scheduled", queue.depth())
            return True
    except Exception as exc:
        log.warning("ingest queue: could not schedule a drain: %s", exc)
    return False


@shared_task(name=INGEST_TASK, bind=True, **LS_RETRY)
def ingest_event(self: Any, project_id: int, payload: dict[str, Any]) -> None:
    """Record one Label Studio webhook payload (idempotent by annotation id + updated_at)."""
    get_services(self.app).loop.handle_event(int(project_id), payload)


@shared_task(name=DRAIN_INGEST_TASK, bind=True, **{**LS_RETRY, "autoretry_for": DRAIN_RETRY_FOR})
def drain_ingest(self: Any, token: str) -> None:
    """Apply the webhook events waiting in the ingest list, in batches, while ``token`` holds the drain lock."""
    services = get_services(self.app)
    dispatcher = services.dispatcher
    if dispatcher is None or dispatcher.ingest_queue is None:
        log.error("drain_ingest without a Redis broker; dropped")
        return
    n = drain(dispatcher.ingest_queue, services.loop.handle_events, str(token), handover=dispatcher.send_drain)
    log.info("ingest queue: drain applied %d events", n)


@shared_task(name=RUN_ROUND_TASK, bind=True)
def run_round(self: Any, project_id: int, round_id: int) -> None:
    """Run round ``round_id`` of project ``project_id`` (train queue)."""
    services = get_services(self.app)
    current = services.store.get_round(int(round_id))
    if current.project_id != int(project_id):
        log.error("round %s does not belong to project %s; dropped", round_id, project_id)
        return
    if current.status.is_final:
        log.info("round %s of project %s is already %s; duplicate delivery ignored",
                 current.index, project_id, current.status)
        if current.push_status is PushStatus.PENDING:  # the worker died between finishing and dispatching the push
            services.loop.execute_round(int(round_id))
        return
    try:
        services.loop.execute_round(int(round_id))
    except ConflictError as exc:
        countdown = float(self.app.conf.get(RETRY_COUNTDOWN_KEY) or 30.0)
        log.info("round %s of project %s: %s; retry in %.0f s", current.index, project_id, exc, countdown)
        raise self.retry(exc=exc, countdown=countdown,
                         max_retries=int(self.app.conf.get(MAX_ROUND_RETRIES_KEY) or 100)) from None


@shared_task(name=SCORE_SHARD_TASK, bind=True)
def score_shard(self: Any, job: dict[str, Any]) -> None:
    """Score one shard of a round's pool (score queue); the waiting round reads the result from disk."""
    shard = ShardJob.from_dict(job)
    try:
        result = get_services(self.app).rounds.score_shard(shard)
    except Exception as exc:
        log.exception("score shard %s of round %s failed", shard.shard, shard.round_id)
        record_shard_failure(shard, exc)
        raise
    log.info("score shard %s of round %s: %d items scored", shard.shard, shard.round_id, result.n)


@shared_task(name=IMPORT_TASK, bind=True)
def run_import(self: Any, import_id: int) -> None:
    """Run import job ``import_id`` (default queue): a large file read and stored in batches; a job already
    started is left alone (a redelivered message), an error in the file fails the job (recorded, not raised)."""
    get_services(self.app).loop.execute_import(int(import_id))


@shared_task(name=ADAPT_TASK, bind=True)
def run_adaptation(self: Any, adaptation_id: int) -> None:
    """Run adaptation ``adaptation_id`` (train queue): masked-LM training of a project's base encoder on its pool;
    one already started or finished is left alone (a redelivered message), an error fails it (recorded, not
    raised)."""
    get_services(self.app).loop.execute_adaptation(int(adaptation_id))


@shared_task(name=PUSH_ROUND_TASK, bind=True, **LS_RETRY)
def push_round(self: Any, round_id: int) -> None:
    """Send round ``round_id``'s predictions and model version to Label Studio (idempotent)."""
    get_services(self.app).loop.push_round(int(round_id))


@shared_task(name=RECONCILE_TASK, bind=True, **LS_RETRY)
def reconcile(self: Any, project_id: int) -> None:
    """Re-read every annotated Label Studio task of the project (a lost webhook loses nothing)."""
    get_services(self.app).loop.reconcile(int(project_id))


__all__ = ["WorkerServices", "build_services", "drain_ingest", "get_services", "ingest_event", "kick_ingest",
           "lower_training_priority", "push_round", "reconcile", "reset_services", "run_adaptation", "run_import",
           "run_round", "score_shard", "settings_of"]
