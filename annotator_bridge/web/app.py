"""The Flask app factory: ``create_app(settings=None, *, store=None, loop=None, predictor=None, dispatcher=None)``.

Collaborators not given are built from ``settings`` (``Settings.from_env()`` when None):
a ``Store`` on ``AL_LOOP_DATABASE_URL``, a ``LoopService`` with the real Label Studio gateway
factory and a ``RoundService`` whose model factory loads torch only when a round trains, a
``PredictService`` (torch only inside ``/predict`` when a model is promoted). Without a
``dispatcher`` (and without a ``loop`` that has one) work runs in-process on one background
thread (``ThreadDispatcher``), so webhooks are still answered at once; ``al-loop serve``
passes the Celery dispatcher.

Blueprints: ``mlbackend`` at ``/`` and again at ``/ml`` (``mlbackend_ml``), ``api`` at ``/api``,
``dashboard`` at ``/dashboard`` and ``metrics`` (``/metrics``). The services live in
``app.extensions["al_loop"]`` (``.settings .store .loop .predictor .dispatcher .queue_probe``;
see :mod:`annotator_bridge.web.context`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from flask import Flask

from al_loop.rounds.predict import PredictService
from al_loop.rounds.service import RoundService
from al_loop.store.repository import Store
from annotator_bridge.dispatch import Dispatcher, InlineDispatcher, ThreadDispatcher
from annotator_bridge.loop import LoopService
from annotator_bridge.monitoring import QueueProbe
from annotator_bridge.settings import Settings
from annotator_bridge.web import api, dashboard, metrics, mlbackend
from annotator_bridge.web.auth import WebhookGuard
from annotator_bridge.web.context import SERVICES_KEY
from annotator_bridge.web.errors import register_error_handlers

log = logging.getLogger("annotator_bridge.web")


@dataclass
class Services:
    """What the views use; ``app.extensions["al_loop"]``."""

    settings: Settings
    store: Store
    loop: LoopService
    predictor: PredictService
    dispatcher: Dispatcher
    webhook_guard: WebhookGuard = field(repr=False)
    queue_probe: QueueProbe | None = None


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    loop: LoopService | None = None,
    predictor: PredictService | None = None,
    dispatcher: Dispatcher | None = None,
) -> Flask:
    """Build the al-loop web app (see the module docstring)."""
    settings = settings or (loop.settings if loop is not None else Settings.from_env())
    if store is None:
        if loop is not None:
            store = loop.store
        else:
            settings.ensure_dirs()
            store = Store(settings.database_url)
    if loop is None:
        rounds = RoundService(store, None, settings.artifacts_dir)
        loop = LoopService(store, None, rounds, dispatcher or InlineDispatcher(), settings)
        if dispatcher is None:
            # answer webhooks at once; ingest and rounds run behind them, one at a time
            loop.dispatcher = ThreadDispatcher(InlineDispatcher(loop))
    dispatcher = dispatcher or loop.dispatcher
    predictor = predictor or PredictService(store)

    app = Flask("annotator_bridge.web", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[SERVICES_KEY] = Services(settings=settings, store=store, loop=loop, predictor=predictor,
                                         dispatcher=dispatcher, webhook_guard=WebhookGuard(settings.webhook_secret))
    register_error_handlers(app)
    app.register_blueprint(mlbackend.bp)
    app.register_blueprint(mlbackend.bp, url_prefix="/ml", name="mlbackend_ml")
    app.register_blueprint(api.bp)
    app.register_blueprint(dashboard.bp)
    metrics.init_metrics(app)
    if not settings.api_token:
        log.warning("AL_LOOP_API_TOKEN is not set: the management API (/api) refuses every request")
    return app
