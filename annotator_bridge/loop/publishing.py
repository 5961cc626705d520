"""``RoundPublisher``: queue and run rounds, push their predictions to Label Studio, switch model versions.

A round is requested (``request_round``: created, then handed to the dispatcher), executed
(``execute_round``: reconcile first, then ``RoundService.run_round``) and pushed
(``push_round``): each scored pool item gets one prediction with ``score = rank / N``
(Label Studio serves the LOWEST score first) and ``model_version`` = the round's tag, then the
project's model_version points at that tag with "Uncertainty sampling".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from al_loop.errors import AlLoopError, ConflictError
from al_loop.rounds.service import RoundService
from al_loop.states import PushStatus, RoundPhase, RoundStatus
from al_loop.store.records import ModelVersion, Project, Round
from al_loop.store.repository import Store
from al_loop.strategies import priority_from_rank
from al_loop.types import Span, TaskKind
from annotator_bridge.dispatch import Dispatcher
from annotator_bridge.labelstudio.config import LabelConfig
from annotator_bridge.labelstudio.convert import prediction_to_ls
from annotator_bridge.labelstudio.projects import UNCERTAINTY_SAMPLING
from annotator_bridge.loop.link import LabelStudioLinks

log = logging.getLogger("annotator_bridge.loop")

PREDICTION_CHUNK = 1000
"""Predictions per Label Studio import call (progress is saved after each)."""


class RoundPublisher:
    """Rounds from request to Label Studio's queue. ``dispatcher`` and ``reconcile`` are looked up per call."""

    def __init__(self, store: Store, rounds: RoundService, links: LabelStudioLinks, *,
                 dispatcher: Callable[[], Dispatcher], reconcile: Callable[[int], Any],
                 clock: Callable[[], datetime], prepare: Callable[[int], Any] | None = None) -> None:
        self.store = store
        self._prepare = prepare  # before a round trains: the project's pool-adaptive pretraining (loop.adapt_pool)
        self.rounds = rounds
        self.links = links
        self._dispatcher = dispatcher
        self._reconcile = reconcile
        self.clock = clock

    # ------------------------------------------------------------------ rounds
    def request_round(self, project_id: int, trigger: str = "api", *, batch_size: int | None = None) -> Round:
        """Create the next round and dispatch it; ConflictError while one is active (a round stuck in
        ``pending`` is dispatched again first, see ``_requeue_stuck``)."""
        try:
            rnd = self.rounds.create_round(project_id, trigger, batch_size=batch_size)
        except ConflictError:
            self._requeue_stuck(project_id)
            raise
        log.info("project %s: round %s created (trigger %s)", project_id, rnd.index, trigger)
        try:
            self._dispatcher().run_round(project_id, rnd.id)
        except Exception as exc:
            if self.store.get_round(rnd.id).status is RoundStatus.PENDING:
                # never leave a round that nobody will run blocking the project
                self.store.update_round(rnd.id, status=RoundStatus.CANCELLED, phase=RoundPhase.DONE,
                                        error=f"could not be queued: {exc}"[:1000])
            raise
        return self.store.get_round(rnd.id)

    def _requeue_stuck(self, project_id: int) -> None:
        """Dispatch again a round ``pending`` for longer than the takeover delay (``RoundService.stale_after``):
        its task message was lost (e.g. Redis restarted without its append-only file). A duplicate delivery is
        harmless: the claim lets one worker run the round, later ones find it running or final."""
        active = self.store.active_round(project_id)
        if active is None or active.status is not RoundStatus.PENDING:
            return
        if self.clock() - active.created_at < self.rounds.stale_after:
            return
        log.warning("project %s: round %s pending since %s; dispatched again", project_id, active.index,
                    active.created_at.isoformat())
        try:
            self._dispatcher().run_round(project_id, active.id)
        except AlLoopError as exc:
            log.warning("project %s: round %s could not be dispatched again: %s", project_id, active.index, exc)

    def start_round(self, project_id: int, trigger: str) -> Round | None:
        """``request_round``, or None (logged) while another round is active."""
        try:
            return self.request_round(project_id, trigger)
        except ConflictError as exc:
            log.info("project %s: no new round (%s): %s", project_id, trigger, exc)
            return None

    def execute_round(self, round_id: int) -> Round:
        """Adapt the encoder to the pool first when the project asks for it and has not yet (``prepare``), reconcile
        (best effort), run the round, then dispatch its push. Idempotent for final rounds."""
        rnd = self.store.get_round(round_id)
        if rnd.status.is_final:
            if rnd.status is RoundStatus.SUCCEEDED and rnd.push_status is PushStatus.PENDING:
                self._dispatch_push(rnd)
            return self.store.get_round(round_id)
        if self._prepare is not None:  # may take minutes (the round stays pending); ConflictError: retried later
            self._prepare(rnd.project_id)
        try:
            self._reconcile(rnd.project_id)
        except AlLoopError as exc:
            log.warning("project %s round %s: reconcile failed (%s: %s); going on with the stored labels",
                        rnd.project_id, rnd.index, type(exc).__name__, exc)
        except Exception:
            # a reconcile bug must not block training: the stored labels are a valid snapshot
            log.exception("project %s round %s: reconcile crashed; going on with the stored labels",
                          rnd.project_id, rnd.index)
        done = self.rounds.run_round(round_id).round
        log.info("project %s round %s: %s (version %s)%s", done.project_id, done.index, done.status,
                 done.version_tag, f": {done.error}" if done.error else "")
        if done.status is RoundStatus.SUCCEEDED and done.push_status is PushStatus.PENDING:
            self._dispatch_push(done)
        return self.store.get_round(round_id)

    def _dispatch_push(self, rnd: Round) -> None:
        try:
            self._dispatcher().push_round(rnd.id)
        except AlLoopError as exc:
            # the push records push_status="failed"; it is retried by the worker or the API
            log.warning("project %s round %s: push to Label Studio failed: %s", rnd.project_id, rnd.index, exc)

    # ------------------------------------------------------------------ push
    def push_round(self, round_id: int) -> Round:
        """Send a succeeded round's predictions to Label Studio and make them drive the queue.

        Each scored pool item with a task gets one prediction: ``score = rank / N`` (rank 0 =
        0.0 = served first under "Uncertainty sampling"), ``model_version = round.version_tag``,
        ``result`` from the stored prediction (empty for the cold start). Then the project's
        model_version is set to the tag with "Uncertainty sampling". Idempotent: progress is
        kept in ``round.report["push"]`` and checked against Label Studio's per-version
        prediction counts, so a retried or repeated push never duplicates predictions.
        A round older than the newest succeeded one is marked ``superseded`` (never rolls
        the queue back). On failure push_status is ``failed`` and the error is re-raised.
        """
        rnd = self.store.get_round(round_id)
        if rnd.status is not RoundStatus.SUCCEEDED:
            raise ConflictError(f"round {rnd.index} of project {rnd.project_id} is {rnd.status}; only a succeeded "
                                "round can be pushed")
        project = self.store.get_project(rnd.project_id)
        link = self.links.link(project.id)
        if link is None or not rnd.version_tag:
            return self.store.update_round(round_id, push_status=PushStatus.SKIPPED)
        latest = self.store.last_succeeded_round(project.id)
        if latest is not None and latest.index > rnd.index:
            log.info("project %s round %s: not pushed, round %s is newer", project.id, rnd.index, latest.index)
            return self.store.update_round(round_id, push_status=PushStatus.SUPERSEDED)
        ls_id, tag = link.ls_project_id, rnd.version_tag
        report = dict(rnd.report)
        state: dict[str, Any] = dict(report.get("push") or {})
        try:
            predictions = self._predictions(project, self.links.label_config(project, link), rnd)
            expected = len(predictions)
            gw = self.links.gateway
            if state.get("version") != tag:
                # first attempt: remember how many predictions of this version Label Studio already holds
                # (e.g. made through /predict) and persist that before importing anything
                state = {"version": tag, "expected": expected, "imported": 0,
                         "base": int(gw.model_versions(ls_id).get(tag, 0))}
                report["push"] = dict(state)
                self.store.update_round(round_id, report=report)
            elif int(state.get("imported", 0)) < expected:
                # a chunk may have been applied although the call failed (timeout): trust Label Studio's count
                applied = int(gw.model_versions(ls_id).get(tag, 0)) - int(state.get("base", 0))
                state["expected"] = expected
                if applied > int(state.get("imported", 0)):
                    state["imported"] = min(applied, expected)
            while state["imported"] < expected:
                start = int(state["imported"])
                chunk = predictions[start:start + PREDICTION_CHUNK]
                gw.import_predictions(ls_id, chunk, model_version=tag)
                state["imported"] = start + len(chunk)
                report["push"] = dict(state)
                self.store.update_round(round_id, report=report)
            state["removed_duplicates"] = self._remove_duplicates(project, rnd, ls_id, tag, state)
            gw.set_model_version(ls_id, tag, sampling=UNCERTAINTY_SAMPLING)
        except AlLoopError as exc:
            state["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            report["push"] = state
            self.store.update_round(round_id, push_status=PushStatus.FAILED, report=report)
            log.warning("project %s round %s: push of %s failed: %s", project.id, rnd.index, tag, exc)
            raise
        state.update(error=None, at=self.clock().isoformat() + "Z")
        report["push"] = state
        self.store.update_link(project.id, model_version=tag)
        log.info("project %s round %s: %d predictions of %s in Label Studio project %s; uncertainty sampling on",
                 project.id, rnd.index, state["expected"], tag, ls_id)
        return self.store.update_round(round_id, push_status=PushStatus.DONE, report=report)

    def _remove_duplicates(self, project: Project, rnd: Round, ls_id: int, tag: str, state: Mapping[str, Any]) -> int:
        """Leave one prediction of ``tag`` per task when Label Studio holds more than the push made.

        The progress check above cannot see an import that Label Studio applies after the client gave
        up on it (a timeout while it was slow, applied after the retry read the count) or two
        executions of the push at the same time: both leave a task with two predictions of the
        version. Checked by count (one call); only then the version's predictions are listed and the
        older ones of each task deleted (the newest kept, so concurrent repairs delete the same ones).
        """
        gw = self.links.gateway
        held = int(gw.model_versions(ls_id).get(tag, 0)) - int(state.get("base", 0))
        if held <= int(state["expected"]):
            return 0
        newest: dict[int, int] = {}
        extra: list[int] = []
        for pred_id, task in sorted(gw.predictions_of_version(ls_id, tag), reverse=True):
            if task in newest:
                extra.append(pred_id)
            else:
                newest[task] = pred_id
        for pred_id in extra:
            gw.delete_prediction(pred_id)
        log.warning("project %s round %s: Label Studio held %d predictions of %s for %d expected (an import applied "
                    "twice, or /predict answers for tasks the push also covered); deleted %d older ones of the same "
                    "tasks", project.id, rnd.index, held, tag, state["expected"], len(extra))
        return len(extra)

    def _predictions(self, project: Project, cfg: LabelConfig, rnd: Round) -> list[dict[str, Any]]:
        """Label Studio predictions of a round, in rank order (one per scored item that has a task)."""
        scores = self.store.get_scores(rnd.id)
        n = len(scores)
        items = {it.item_id: it for it in self.store.get_items(project.id, [s.item_id for s in scores])}
        out: list[dict[str, Any]] = []
        without_task = 0
        tag = str(rnd.version_tag)
        for position, s in enumerate(scores):
            item = items[s.item_id]
            if item.ext_task_id is None:
                without_task += 1
                continue
            pred = s.prediction or {}
            predicted: list[Any]
            if project.task is TaskKind.NER:
                predicted = [Span.from_dict(d) for d in pred.get("spans") or []]
            else:
                predicted = [str(x) for x in pred.get("labels") or []]
            priority = priority_from_rank(position, n)
            try:
                out.append(prediction_to_ls(item.ext_task_id, predicted, cfg, model_version=tag, score=priority,
                                            text=item.text))
            except AlLoopError as exc:
                log.warning("project %s round %s: prediction for item %s not convertible (%s); sent empty",
                            project.id, rnd.index, item.item_id, exc)
                out.append(prediction_to_ls(item.ext_task_id, [], cfg, model_version=tag, score=priority,
                                            text=item.text))
        if without_task:
            log.warning("project %s round %s: %d scored items have no Label Studio task (reconcile creates them)",
                        project.id, rnd.index, without_task)
        return out

    # ------------------------------------------------------------------ versions
    def promote(self, project_id: int, version_id: int) -> ModelVersion:
        return self.rounds.promote(project_id, version_id)

    def rollback(self, project_id: int) -> ModelVersion:
        return self.rounds.rollback(project_id)


__all__ = ["PREDICTION_CHUNK", "RoundPublisher"]
