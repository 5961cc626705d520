"""The Celery configuration of al-loop: queue and task names, broker options, delivery guarantees.

Everything here is data derived from :class:`annotator_bridge.settings.Settings`; the app
(:mod:`annotator_bridge.worker.celery_app`) loads it with ``app.conf.update(celery_config(settings))``
and the tasks read their settings back from ``app.conf`` (``al_loop_settings``,
``al_loop_retry_countdown``, ``al_loop_max_round_retries``).

Delivery guarantees (see DESIGN.md section 5):

* ``task_acks_late=True`` + ``task_reject_on_worker_lost=True``: a task is acknowledged after
  it ran, so a worker killed mid-round leaves the message unacknowledged and it is delivered
  again. That is safe because tasks are idempotent: a finished round is a no-op, a round
  owned by another live worker is retried later (``RoundService`` claims rounds in the DB).
* ``worker_prefetch_multiplier=1``: a training worker holds at most one round; the next one
  waits in Redis where any free worker can take it.
* Redis ``visibility_timeout`` (``AL_LOOP_VISIBILITY_TIMEOUT``, seconds) must be longer than the
  longest round, otherwise Redis hands a still-running round to a second worker (which then
  only retries, but wastes a slot). The restore sweep interval follows it, so a short timeout
  (tests) also recovers abandoned messages quickly.
* No result backend: round status, progress and errors live in the al-loop database.

Queues: ``default`` (ingest and its batched drain, push, reconcile: light I/O), the train queue
(``AL_LOOP_TRAIN_QUEUE``, default ``train``: rounds and pool-adaptive pretraining; one solo-pool worker per GPU)
and ``score`` (pool-scoring shards of rounds with ``loop.score_shards > 1``; run ``al-loop worker --queues score
--pool solo`` on as many machines as shards; the round's own worker waits for them, so the score queue must have
consumers other than the train worker).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from kombu import Exchange, Queue

from annotator_bridge.settings import Settings

DEFAULT_QUEUE = "default"
SCORE_QUEUE = "score"

INGEST_TASK = "al_loop.ingest_event"
RUN_ROUND_TASK = "al_loop.run_round"
PUSH_ROUND_TASK = "al_loop.push_round"
RECONCILE_TASK = "al_loop.reconcile"
DRAIN_INGEST_TASK = "al_loop.drain_ingest"
SCORE_SHARD_TASK = "al_loop.score_shard"
IMPORT_TASK = "al_loop.run_import"
ADAPT_TASK = "al_loop.run_adaptation"
DEFAULT_QUEUE_TASKS = (INGEST_TASK, DRAIN_INGEST_TASK, PUSH_ROUND_TASK, RECONCILE_TASK, IMPORT_TASK)

SETTINGS_KEY = "al_loop_settings"
RETRY_COUNTDOWN_KEY = "al_loop_retry_countdown"
MAX_ROUND_RETRIES_KEY = "al_loop_max_round_retries"


def queues_of(settings: Settings) -> tuple[str, str]:
    """``("default", <train queue>)``."""
    return DEFAULT_QUEUE, settings.train_queue


def broker_of(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Broker URL and transport options for ``settings``.

    Redis: ``visibility_timeout`` from settings, and the unacked-restore sweep every
    ``clamp(timeout/12, 1, 10)`` s (every call when the timeout is under 10 minutes), so an
    abandoned message is visible again at most a few seconds after its timeout.
    No broker URL / ``filesystem://``: kombu's filesystem transport under
    ``<AL_LOOP_HOME>/broker/in`` (single machine, no Redis needed; polled every 0.1 s).
    """
    vt = settings.visibility_timeout
    if settings.uses_filesystem_broker:
        root = settings.broker_dir
        queue_dir, processed, control = root / "in", root / "processed", root / "control"
        for d in (queue_dir, processed, control):
            d.mkdir(parents=True, exist_ok=True)
        # one machine: producers and consumers share one folder (in = out)
        return "filesystem://", {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "processed_folder": str(processed),
            "control_folder": str(control),  # exchange bindings (default: ./control in the cwd)
            "store_processed": False,
            "polling_interval": 0.1,
        }
    options: dict[str, Any] = {
        "visibility_timeout": vt,
        "unacked_restore_interval": max(1, min(10, vt // 12)),
        "unacked_restore_throttle": 1 if vt < 600 else 10,
    }
    return settings.broker_url, options


def stale_after_of(settings: Settings) -> timedelta:
    """How old a round's heartbeat must be before another worker may take the round over.

    Redis redelivers an unacknowledged round only after the visibility timeout, so the two
    move together: ``min(10 min, visibility timeout)``.
    """
    return timedelta(seconds=max(1, min(600, settings.visibility_timeout)))


def celery_config(settings: Settings) -> dict[str, Any]:
    """The app configuration for ``settings`` (``al_loop_*`` keys are read by the tasks)."""
    broker, transport_options = broker_of(settings)
    train = settings.train_queue
    vt = settings.visibility_timeout
    countdown = float(max(1, min(30, vt // 6)))
    exchange = Exchange("al_loop", type="direct")
    return {
        "broker_url": broker,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_exchange": exchange.name,
        "task_default_routing_key": DEFAULT_QUEUE,
        "task_queues": (
            Queue(DEFAULT_QUEUE, exchange, routing_key=DEFAULT_QUEUE),
            Queue(train, exchange, routing_key=train),
        ),  # the score queue is created on first use (task_create_missing_queues), like any --queues name
        "task_routes": {
            RUN_ROUND_TASK: {"queue": train, "routing_key": train},
            ADAPT_TASK: {"queue": train, "routing_key": train},
            SCORE_SHARD_TASK: {"queue": SCORE_QUEUE, "routing_key": SCORE_QUEUE},
            **{name: {"queue": DEFAULT_QUEUE, "routing_key": DEFAULT_QUEUE} for name in DEFAULT_QUEUE_TASKS},
        },
        # a webhook must be acked fast: fail a publish quickly instead of retrying for long
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                                      "interval_max": 0.5},
        "broker_connection_timeout": 2.0,
        "timezone": "UTC",
        SETTINGS_KEY: settings,
        # a claim conflict ends when the owner finishes or its heartbeat goes stale: bounded by the visibility timeout
        RETRY_COUNTDOWN_KEY: countdown,
        MAX_ROUND_RETRIES_KEY: int(2 * vt / countdown) + 10,
    }


__all__ = [
    "ADAPT_TASK",
    "DEFAULT_QUEUE",
    "DEFAULT_QUEUE_TASKS",
    "DRAIN_INGEST_TASK",
    "INGEST_TASK",
    "PUSH_ROUND_TASK",
    "RECONCILE_TASK",
    "RUN_ROUND_TASK",
    "SCORE_QUEUE",
    "SCORE_SHARD_TASK",
    "broker_of",
    "celery_config",
    "queues_of",
    "stale_after_of",
]
