"""``LoopService``: the live loop's services, composed in one place.

One object per process (web or worker) with its collaborators injected:
``LoopService(store, gateway_factory, rounds, dispatcher, settings)``. It builds

- ``links`` (:class:`~annotator_bridge.loop.link.LabelStudioLinks`): gateway, label config, ML backend, task mapping;
- ``projects`` (:class:`~annotator_bridge.loop.projects.ProjectSetup`): create/attach projects, import items;
- ``annotations`` (:class:`~annotator_bridge.loop.annotations.AnnotationSync`): webhook events, ingest, reconcile;
- ``batches`` (:class:`~annotator_bridge.loop.batch.BatchIngest`): many webhook events in one transaction;
- ``publisher`` (:class:`~annotator_bridge.loop.publishing.RoundPublisher`): request/execute/push rounds, versions;
- ``adaptation`` (:class:`~annotator_bridge.loop.adaptation.PoolAdaptation`): pool-adaptive pretraining;

and exposes their entry points, so a view or a task calls one method. Every method takes ids
and is safe to call again (webhooks and Celery tasks are redelivered).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from al_loop.rounds.service import RoundService
from al_loop.store.adaptations import Adaptation
from al_loop.store.imports import ImportJob
from al_loop.store.records import ModelVersion, Project, Round
from al_loop.store.repository import Store, utcnow
from al_loop.types import Example
from annotator_bridge.dispatch import Dispatcher, InlineDispatcher
from annotator_bridge.labelstudio.config import LabelConfig
from annotator_bridge.loop.adaptation import Adapter, PoolAdaptation
from annotator_bridge.loop.annotations import AnnotationSync
from annotator_bridge.loop.batch import BatchIngest
from annotator_bridge.loop.link import LabelStudioLinks
from annotator_bridge.loop.ports import Gateway, GatewayFactory, label_studio_gateway_factory
from annotator_bridge.loop.projects import ProjectSetup
from annotator_bridge.loop.publishing import RoundPublisher
from annotator_bridge.loop.spec import ProjectSpec
from annotator_bridge.monitoring import project_status
from annotator_bridge.settings import Settings


class LoopService:
    """The live loop (see the module docstring). Thread-safe: state lives in the store."""

    def __init__(
        self,
        store: Store,
        gateway_factory: GatewayFactory | None,
        rounds: RoundService,
        dispatcher: Dispatcher | None,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        adapter: Adapter | None = None,
    ) -> None:
        self.store = store
        self.rounds = rounds
        self._settings = settings
        self.clock = clock
        self.links = LabelStudioLinks(store, settings, gateway_factory or label_studio_gateway_factory(settings))
        self.publisher = RoundPublisher(store, rounds, self.links, dispatcher=lambda: self.dispatcher,
                                        reconcile=lambda pid: self.annotations.reconcile(pid), clock=clock,
                                        prepare=lambda pid: self.adaptation.ensure_adapted(pid))
        self.adaptation = PoolAdaptation(store, rounds, dispatcher=lambda: self.dispatcher, adapter=adapter)
        self.annotations = AnnotationSync(store, self.links, start_round=self.publisher.start_round,
                                          should_start_round=rounds.should_start_round, clock=clock)
        self.batches = BatchIngest(store, self.links, self.annotations, start_round=self.publisher.start_round,
                                   should_start_round=rounds.should_start_round)
        self.projects = ProjectSetup(store, settings, self.links, start_round=self.publisher.start_round)
        if dispatcher is None:
            dispatcher = InlineDispatcher(self)
        elif isinstance(dispatcher, InlineDispatcher) and dispatcher.loop is None:
            dispatcher.bind(self)
        self.dispatcher: Dispatcher = dispatcher

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """New settings for every service (e.g. a changed ``AL_LOOP_PUBLIC_URL``)."""
        self._settings = self.links.settings = self.projects.settings = settings

    @property
    def gateway(self) -> Gateway:
        """The Label Studio gateway (made on first use)."""
        return self.links.gateway

    # ------------------------------------------------------------------ the entry points views and tasks call
    def create_project(self, spec: ProjectSpec | Mapping[str, Any]) -> Project:
        return self.projects.create_project(spec)

    def import_items(self, project_id: int, examples: Iterable[Example] | None = None,
                     **options: Any) -> dict[str, Any]:
        """See :meth:`ProjectSetup.import_items` (``path``, ``format``, ``split``, ``record_labels``,
        ``start_round``)."""
        return self.projects.import_items(project_id, examples, **options)

    def execute_import(self, import_id: int) -> ImportJob:
        """See :meth:`ProjectSetup.execute_import` (an import job's task)."""
        return self.projects.execute_import(import_id)

    def start_adaptation(self, project_id: int) -> Adaptation:
        """See :meth:`PoolAdaptation.start` (``POST /api/projects/<id>/adapt``)."""
        return self.adaptation.start(project_id)

    def execute_adaptation(self, adaptation_id: int) -> Adaptation:
        """See :meth:`PoolAdaptation.execute` (an adaptation's task)."""
        return self.adaptation.execute(adaptation_id)

    def handle_event(self, project_id: int, payload: Mapping[str, Any]) -> dict[str, Any]:
        return self.annotations.handle_event(project_id, payload)

    def handle_events(self, project_id: int, payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Webhook bodies of one project in one transaction (:meth:`BatchIngest.handle_events`)."""
        return self.batches.handle_events(project_id, payloads)

    def reconcile(self, project_id: int) -> dict[str, Any]:
        return self.annotations.reconcile(project_id)

    def request_round(self, project_id: int, trigger: str = "api", *, batch_size: int | None = None) -> Round:
        return self.publisher.request_round(project_id, trigger, batch_size=batch_size)

    def execute_round(self, round_id: int) -> Round:
        return self.publisher.execute_round(round_id)

    def push_round(self, round_id: int) -> Round:
        return self.publisher.push_round(round_id)

    def promote(self, project_id: int, version_id: int) -> ModelVersion:
        return self.publisher.promote(project_id, version_id)

    def rollback(self, project_id: int) -> ModelVersion:
        return self.publisher.rollback(project_id)

    def label_config(self, project: Project) -> LabelConfig:
        return self.links.label_config(project)

    def status(self, project_id: int) -> dict[str, Any]:
        """The project's status as the API shows it (:func:`annotator_bridge.monitoring.project_status`)."""
        return project_status(self.store, project_id)


__all__ = ["LoopService"]
