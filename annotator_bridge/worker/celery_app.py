"""The Celery application: broker, queues, routes and the delivery guarantees a round needs.

``make_celery(settings)`` builds an app from :class:`annotator_bridge.settings.Settings`;
``app`` (module attribute, for ``celery -A annotator_bridge.worker.celery_app``) is built on
first access from ``Settings.from_env()``. Importing this module connects to nothing and
loads no model.

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

Queues: ``default`` (ingest, push, reconcile: light I/O) and the train queue
(``AL_LOOP_TRAIN_QUEUE``, default ``train``: rounds; one solo-pool worker per GPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu import Exchange, Queue

if TYPE_CHECKING:
    from annotator_bridge.settings import Settings

DEFAULT_QUEUE = "default"
TRAIN_QUEUE = "train"

INGEST_TASK = "al_loop.ingest_event"
RUN_ROUND_TASK = "al_loop.run_round"
PUSH_ROUND_TASK = "al_loop.push_round"
RECONCILE_TASK = "al_loop.reconcile"
DEFAULT_QUEUE_TASKS = (INGEST_TASK, PUSH_ROUND_TASK, RECONCILE_TASK)


def train_queue_of(settings: Settings) -> str:
    return str(getattr(settings, "train_queue", None) or TRAIN_QUEUE)


def broker_of(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Broker URL and transport options for ``settings``.

    Redis: ``visibility_timeout`` from settings, and the unacked-restore sweep every
    ``clamp(timeout/12, 1, 10)`` s (every call when the timeout is under 10 minutes), so an
    abandoned message is visible again at most a few seconds after its timeout.
    No broker URL / ``filesystem://``: kombu's filesystem transport under
    ``<AL_LOOP_HOME>/broker/in`` (single machine, no Redis needed; polled every 0.1 s).
    """
    url = str(getattr(settings, "broker_url", None) or "filesystem://")
    vt = int(getattr(settings, "visibility_timeout", 7200) or 7200)
    if url.startswith("filesystem"):
        root = Path(getattr(settings, "broker_dir", None) or Path(settings.home) / "broker")
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
    return url, options


def make_celery(settings: Settings | None = None) -> Celery:
    """A configured Celery app with the al-loop tasks registered (no connection is made)."""
    if settings is None:
        from annotator_bridge.settings import Settings

        settings = Settings.from_env()
    broker, transport_options = broker_of(settings)
    train = train_queue_of(settings)
    vt = int(getattr(settings, "visibility_timeout", 7200) or 7200)
    app = Celery("al_loop", set_as_current=False)
    exchange = Exchange("al_loop", type="direct")
    app.conf.update(
        broker_url=broker,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_default_queue=DEFAULT_QUEUE,
        task_default_exchange=exchange.name,
        task_default_routing_key=DEFAULT_QUEUE,
        task_queues=(
            Queue(DEFAULT_QUEUE, exchange, routing_key=DEFAULT_QUEUE),
            Queue(train, exchange, routing_key=train),
        ),
        task_routes={
            RUN_ROUND_TASK: {"queue": train, "routing_key": train},
            **{name: {"queue": DEFAULT_QUEUE, "routing_key": DEFAULT_QUEUE} for name in DEFAULT_QUEUE_TASKS},
        },
        # a webhook must be acked fast: fail a publish quickly instead of retrying for long
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        broker_connection_timeout=2.0,
        timezone="UTC",
    )
    app.al_loop_settings = settings  # type: ignore[attr-defined]
    app.al_loop_retry_countdown = float(max(1, min(30, vt // 6)))  # type: ignore[attr-defined]

    from annotator_bridge.worker.tasks import register_tasks

    register_tasks(app)
    return app


_app: Celery | None = None


def get_app() -> Celery:
    """The process-wide app built from the environment on first use."""
    global _app
    if _app is None:
        _app = make_celery()
    return _app


def __getattr__(name: str) -> Any:  # PEP 562: ``celery -A annotator_bridge.worker.celery_app`` reads ``app``
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
