"""``al-loop serve`` (the Flask web process) and ``al-loop worker`` (a Celery worker).

Both read their configuration from the environment through ``Settings.from_env()``
(AL_LOOP_DATABASE_URL, AL_LOOP_BROKER_URL, ... see deploy/.env.example).

``al-loop serve`` runs the app factory behind a WSGI server:

* ``--server werkzeug`` (default): werkzeug's threaded server, one process, a thread per
  connection. The local stack (``al-loop up``) and the integration tests run it.
* ``--server gunicorn`` (compose/production; in the ``server`` extra): ``--workers`` processes
  (2) x ``--threads`` threads (8), gthread workers. The app is built in each worker after the
  fork (never preloaded): ``/predict`` loads torch lazily, and CUDA/torch state must not be
  created before a fork.

``benchmarks/bench_ingest.py --server`` measures both: at 200 webhooks/s (a new connection each)
they cost the same CPU per webhook (about 1.2-1.5 ms) and, interleaved on the same machine, have
the same acknowledgement p50/p99, so the default stays the one without extra processes. What made
the tail long was the webhook path's database reads (:class:`annotator_bridge.web.mlbackend.LinkCache`)
and the first request's imports and connections (:func:`warm_up`, run by both servers).

Both refuse to start without an API token and a webhook secret, or with a placeholder secret
(``Settings.require_secrets``). Access logs (werkzeug's and gunicorn's) go through
``annotator_bridge.web.accesslog``: secret-looking query parameters are written as ``***``. The
log level is ``AL_LOOP_LOG_LEVEL`` (``-v``: DEBUG); access-log lines are INFO records.

``al-loop worker --queues default`` runs ingest/push/reconcile on a threads pool;
``al-loop worker --queues train`` runs rounds, and ``--queues score`` score shards, one at a time in
the worker's own process (the solo pool is their default: CUDA does not survive ``fork``; run one
such worker per GPU, with ``CUDA_VISIBLE_DEVICES`` selecting the GPU).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

log = logging.getLogger("annotator_bridge.serve")

POOLS = ("solo", "threads", "prefork")
SERVERS = ("werkzeug", "gunicorn")
DEFAULT_SERVER = "werkzeug"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"{value} is outside 1..1024")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve",
        help="run the web server (webhooks, Label Studio ML backend, management API)",
        description="Serve the al-loop HTTP API: /webhook, /health, /setup, /predict (Label Studio ML-backend "
        "protocol) and /api/... . Configuration comes from AL_LOOP_* environment variables.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER,
                   help="werkzeug (default: one process, a thread per connection) or gunicorn (--workers "
                   "processes x --threads threads; compose)")
    p.add_argument("--workers", type=_positive, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=_positive, default=8, help="gunicorn threads per worker")
    p.add_argument("--timeout", type=_positive, default=120, help="gunicorn worker timeout, seconds")
    p.set_defaults(func=run_serve)

    w = sub.add_parser(
        "worker",
        help="run a Celery worker for the given queues",
        description="Run a Celery worker. `--queues default` for ingest/push/reconcile; `--queues train --pool solo` "
        "for training rounds (one worker per GPU: CUDA does not survive fork).",
    )
    w.add_argument("--queues", "-Q", default="default",
                   help="comma-separated queues: default, train (the train queue name is AL_LOOP_TRAIN_QUEUE)")
    w.add_argument("--pool", "-P", choices=POOLS, default=None,
                   help="solo (default for the train and score queues), threads (default otherwise) or prefork")
    w.add_argument("--concurrency", "-c", type=int, default=None,
                   help="tasks at once (default: 1 for solo, 4 for threads/prefork)")
    w.add_argument("--loglevel", "-l", default=None, help="debug, info, warning, error (default AL_LOOP_LOG_LEVEL)")
    w.add_argument("--hostname", "-n", default=None, help="worker node name (default <queues>-<pid>@<host>)")
    w.set_defaults(func=run_worker)


# ---------------------------------------------------------------------------- serve
def build_web_app(settings: Any = None) -> Any:
    """The Flask app wired to Celery (CeleryDispatcher) for ``settings`` (default: from the environment)."""
    from annotator_bridge.settings import Settings
    from annotator_bridge.web.app import create_app
    from annotator_bridge.web.context import set_queue_probe
    from annotator_bridge.worker.celery_app import make_celery
    from annotator_bridge.worker.dispatcher import CeleryDispatcher
    from annotator_bridge.worker.probe import make_queue_probe

    settings = settings or Settings.from_env()
    celery = make_celery(settings)
    app = create_app(settings, dispatcher=CeleryDispatcher(celery))
    set_queue_probe(app, make_queue_probe(settings, celery, timeout=0.5))
    warm_up(app)
    return app


def warm_up(app: Any) -> list[str]:
    """Pay before the first request what the first webhook would otherwise pay (about 0.2 s of imports and
    connections: the Celery task registry, result backend and broker connection, the ingest list's Redis
    connection, the Label Studio links, Flask's first request). Best effort: a step that fails (the broker
    is down) is logged and left to the first request. Returns the steps that failed."""
    from annotator_bridge.web.context import services
    from annotator_bridge.worker.config import DEFAULT_QUEUE

    svc = services(app)
    dispatcher = svc.dispatcher
    celery = getattr(dispatcher, "app", None)

    def broker() -> None:
        if celery is None:
            return
        celery.finalize(auto=True)
        _ = celery.backend
        with celery.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)
            producer.maybe_declare(celery.amqp.queues[DEFAULT_QUEUE])

    def ingest_list() -> None:
        queue = getattr(dispatcher, "ingest_queue", None)
        if queue is not None:
            queue.depth()

    def links() -> None:
        for project in svc.store.list_projects():
            link = svc.store.get_link(project.id)
            if link is not None:
                svc.links.lookup(int(link.ls_project_id))

    def flask() -> None:
        app.test_client().get("/health")

    failed = []
    for name, step in (("broker", broker), ("ingest list", ingest_list), ("links", links), ("flask", flask)):
        try:
            step()
        except Exception as exc:  # best effort: the first request does it again
            failed.append(name)
            log.warning("warm-up: %s: %s: %s", name, type(exc).__name__, exc)
    return failed


def _checked_settings(process: str) -> Any:
    """Settings from the environment, refused (ConfigError) with missing or placeholder secrets."""
    from annotator_bridge.settings import Settings

    settings = Settings.from_env()
    settings.require_secrets(process)
    return settings


def apply_log_level(settings: Any, verbose: bool = False) -> int:
    """Set the root logger to ``AL_LOOP_LOG_LEVEL`` (DEBUG with ``-v``); returns the level. At WARNING and
    above the access log (an INFO record per request) is off too."""
    level = logging.DEBUG if verbose else int(logging.getLevelName(str(settings.log_level).upper()))
    logging.getLogger().setLevel(level)
    logging.getLogger("werkzeug").setLevel(level)  # werkzeug would set its own (INFO) on its first record
    return level


def run_serve(args: argparse.Namespace) -> int:
    from annotator_bridge.web import accesslog

    settings = _checked_settings("al-loop serve")
    level = apply_log_level(settings, bool(getattr(args, "verbose", False)))
    accesslog.install()
    if args.server == "gunicorn":
        _open_database_once(settings)
        return _serve_gunicorn(args, level)
    from werkzeug.serving import run_simple

    app = build_web_app(settings)
    log.info("al-loop web server on http://%s:%d (werkzeug, threaded)", args.host, args.port)
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False, use_debugger=False)
    return 0


def _open_database_once(settings: Any) -> None:
    """Upgrade (or refuse) the database in gunicorn's master, before it forks: a database from a newer
    al-loop is then one CLI error line instead of a traceback in every forked worker."""
    from al_loop.store import Store

    settings.ensure_dirs()
    Store(settings.database_url).dispose()


def _serve_gunicorn(args: argparse.Namespace, level: int = logging.INFO) -> int:
    try:
        from gunicorn.app.base import BaseApplication
        from gunicorn.glogging import Logger
    except ImportError as exc:
        from al_loop.errors import ConfigError

        raise ConfigError("--server gunicorn needs gunicorn: pip install 'al-loop[server]' (or gunicorn)") from exc

    class _RedactingLogger(Logger):  # type: ignore[misc]
        """gunicorn's logger with the access-log filter put back after every (re)configuration."""

        def setup(self, cfg: Any) -> None:
            from annotator_bridge.web import accesslog

            super().setup(cfg)
            accesslog.install()

    class _App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            opts = {
                "bind": f"{args.host}:{args.port}",
                "workers": args.workers,
                "threads": args.threads,
                "worker_class": "gthread",
                "timeout": args.timeout,
                "preload_app": False,  # build the app after the fork: no torch/CUDA state crosses it
                "accesslog": "-" if level <= logging.INFO else None,
                "loglevel": logging.getLevelName(level).lower(),
                "logger_class": _RedactingLogger,
            }
            if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):  # heartbeat file off a disk /tmp
                opts["worker_tmp_dir"] = "/dev/shm"
            for key, value in opts.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return build_web_app()

    _App().run()
    return 0


# ---------------------------------------------------------------------------- worker
def worker_argv(args: argparse.Namespace, train_queue: str = "train", log_level: str = "INFO") -> list[str]:
    """The ``celery worker`` argv for ``al-loop worker`` options."""
    from annotator_bridge.worker.config import SCORE_QUEUE

    queues = [q.strip() for q in str(args.queues).split(",") if q.strip()]
    if not queues:
        raise SystemExit("al-loop worker: --queues must name at least one queue")
    queues = [train_queue if q == "train" else q for q in queues]
    # Queues that load a model (rounds, score shards) run one task at a time in the worker's own process.
    model_queues = {train_queue, SCORE_QUEUE}
    pool = args.pool or ("solo" if model_queues & set(queues) else "threads")
    concurrency = args.concurrency or (1 if pool == "solo" else 4)
    hostname = args.hostname or f"{'-'.join(queues)}-{os.getpid()}@%h"
    return [
        "worker",
        "--queues", ",".join(queues),
        "--pool", pool,
        "--concurrency", str(concurrency),
        "--loglevel", (args.loglevel or log_level).upper(),
        "--hostname", hostname,
        "--without-gossip",
        "--without-mingle",
    ]


def run_worker(args: argparse.Namespace) -> int:
    from annotator_bridge.worker.celery_app import make_celery

    settings = _checked_settings("al-loop worker")
    app = make_celery(settings)
    argv = worker_argv(args, settings.train_queue, settings.log_level)
    log.info("celery %s", " ".join(argv))
    app.worker_main(argv=argv)
    return 0
