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

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from al_loop.rounds.predict import PredictService
from al_loop.rounds.service import RoundService
from al_loop.store.repository import Store
from annotator_bridge.dispatch import Dispatcher, InlineDispatcher, ThreadDispatcher
from annotator_bridge.loop import LoopService
from annotator_bridge.monitoring import QueueProbe
from annotator_bridge.settings import Settings
from annotator_bridge.web import api, dashboard, metrics, mlbackend, openapi
from annotator_bridge.web.auth import WebhookGuard
from annotator_bridge.web.context import SERVICES_KEY
from annotator_bridge.web.errors import register_error_handlers
from annotator_bridge.web.mlbackend import LinkCache
from annotator_bridge.web.validate import BoundedIntConverter

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
    links: LinkCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.links = LinkCache(self._find_link)

    def _find_link(self, ls_id: int) -> int | None:
        """The al-loop project id of Label Studio project ``ls_id`` (the store, read at call time)."""
        link = self.store.find_link(ls_id)
        return int(link.project_id) if link is not None else None


def finite(value: Any) -> Any:
    """``value`` with every NaN/Infinity float replaced by None (what strict JSON clients can read)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class StrictJSONProvider(DefaultJSONProvider):
    """JSON out is always strict: never ``NaN`` or ``Infinity`` (a stored non-finite number is sent as null)."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        try:
            return json.dumps(obj, allow_nan=False, **kwargs)
        except ValueError:
            return json.dumps(finite(obj), allow_nan=False, **kwargs)


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
    app.json = StrictJSONProvider(app)
    app.url_map.converters["int"] = BoundedIntConverter  # ids past 64 bits: 404, never an OverflowError
    app.extensions[SERVICES_KEY] = Services(settings=settings, store=store, loop=loop, predictor=predictor,
                                         dispatcher=dispatcher, webhook_guard=WebhookGuard(settings.webhook_secret))
    register_error_handlers(app)
    app.register_blueprint(mlbackend.bp)
    app.register_blueprint(mlbackend.bp, url_prefix="/ml", name="mlbackend_ml")
    app.register_blueprint(api.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(openapi.bp)
    metrics.init_metrics(app)
    if not settings.api_token:
        log.warning("AL_LOOP_API_TOKEN is not set: the management API (/api) refuses every request")
    return app
