"""Pool-adaptive pretraining in the store: ``Adaptation`` records (the ``adaptations`` table) and their changes.

An adaptation is created ``pending`` (the API, or a project's first round with ``loop.adapt_pool``), run by
``annotator_bridge.loop.adaptation.PoolAdaptation`` (``running``, progress written as it trains) and ends
``done`` with the adapted encoder's folder and cache key, or ``failed`` with its error (``al_loop.states.AdaptStatus``).
Rounds of the project start from the newest ``done`` adaptation of its current base model
(:func:`done_adaptation`). One adaptation per project is active at a time (:func:`create_adaptation`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from al_loop.errors import ConflictError, NotFoundError
from al_loop.states import AdaptStatus, check_adapt_transition
from al_loop.store.limits import check_string
from al_loop.store.repository import Store, _known_id
from al_loop.store.tables import AdaptationRow

PROGRESS_FIELDS = frozenset({"steps_done", "steps_total", "texts", "loss", "heldout_loss", "seconds", "folder", "key"})
ABANDONED = "abandoned: no progress for {minutes:.0f} minutes (the worker running it stopped?)"


@dataclass(frozen=True)
class Adaptation:
    """One adaptation of project ``project_id``'s ``base_model`` (the project's setting as written when it
    started): optimizer steps done of ``steps_total``, pool ``texts`` trained on, the last training MLM ``loss``,
    the held-out MLM loss after training, wall ``seconds``; ``folder``/``key``: the adapted encoder once done."""

    id: int
    project_id: int
    status: AdaptStatus
    base_model: str
    steps_done: int
    steps_total: int
    texts: int
    loss: float | None
    heldout_loss: float | None
    seconds: float | None
    folder: str | None
    key: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def progress(self) -> float:
        """Steps done / step budget, 0..1 (1 once done: a time budget may stop it earlier)."""
        if self.status is AdaptStatus.DONE:
            return 1.0
        return min(1.0, self.steps_done / self.steps_total) if self.steps_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        out["progress"] = round(self.progress, 4)
        for key in ("created_at", "updated_at", "finished_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _record(r: AdaptationRow) -> Adaptation:
    return Adaptation(id=r.id, project_id=r.project_id, status=AdaptStatus(r.status), base_model=r.base_model,
                      steps_done=r.steps_done, steps_total=r.steps_total, texts=r.texts, loss=_finite(r.loss),
                      heldout_loss=_finite(r.heldout_loss), seconds=_finite(r.seconds), folder=r.folder, key=r.key,
                      error=r.error, created_at=r.created_at, updated_at=r.updated_at, finished_at=r.finished_at)


def create_adaptation(store: Store, project_id: int, base_model: str, steps_total: int, *,
                      stale_after: timedelta = timedelta(minutes=10)) -> Adaptation:
    """A new ``pending`` adaptation of ``project_id``. ConflictError while another one is pending or running
    with progress newer than ``stale_after``; an older running one is marked failed (abandoned) first.
    NotFoundError for an unknown project."""
    check_string("base model", base_model, AdaptationRow.base_model)
    with store.session() as s:
        store._project_row(s, project_id, lock=True)
        now = store.clock()
        active = s.scalars(select(AdaptationRow).where(AdaptationRow.project_id == project_id,
                                                       AdaptationRow.status.in_(("pending", "running")))).all()
        for row in active:
            if now - row.updated_at < stale_after:
                raise ConflictError(f"adaptation {row.id} of project {project_id} is {row.status} "
                                    f"({row.steps_done}/{row.steps_total} steps)")
            row.status = check_adapt_transition(row.status, AdaptStatus.FAILED).value
            row.error = ABANDONED.format(minutes=stale_after.total_seconds() / 60)
            row.updated_at = row.finished_at = now
        row = AdaptationRow(project_id=project_id, status=AdaptStatus.PENDING.value, base_model=base_model,
                            steps_done=0, steps_total=int(steps_total), texts=0, created_at=now, updated_at=now)
        s.add(row)
        s.flush()
        return _record(row)


def get_adaptation(store: Store, project_id: int | None, adaptation_id: int) -> Adaptation:
    """Adaptation ``adaptation_id`` of ``project_id`` (any project's when None); NotFoundError otherwise."""
    with store.session() as s:
        row = s.get(AdaptationRow, _known_id("adaptation", adaptation_id))
        if row is None or (project_id is not None and row.project_id != project_id):
            where = f"project {project_id} has" if project_id is not None else "there is"
            raise NotFoundError(f"{where} no adaptation {adaptation_id}")
        return _record(row)


def latest_adaptation(store: Store, project_id: int, base_model: str | None = None) -> Adaptation | None:
    """The project's newest adaptation (of ``base_model`` when given), or None."""
    with store.session() as s:
        stmt = select(AdaptationRow).where(AdaptationRow.project_id == project_id)
        if base_model is not None:
            stmt = stmt.where(AdaptationRow.base_model == base_model)
        row = s.scalars(stmt.order_by(AdaptationRow.id.desc()).limit(1)).first()
        return _record(row) if row is not None else None


def done_adaptation(store: Store, project_id: int, base_model: str) -> Adaptation | None:
    """The newest ``done`` adaptation of the project's ``base_model`` (what its rounds start from), or None."""
    with store.session() as s:
        row = s.scalars(select(AdaptationRow)
                        .where(AdaptationRow.project_id == project_id, AdaptationRow.base_model == base_model,
                               AdaptationRow.status == AdaptStatus.DONE.value)
                        .order_by(AdaptationRow.id.desc()).limit(1)).first()
        return _record(row) if row is not None else None


def update_adaptation(store: Store, adaptation_id: int, *, status: AdaptStatus | None = None,
                      error: str | None = None, **progress: Any) -> Adaptation:
    """Write progress fields (``PROGRESS_FIELDS``) and/or a status change (checked against ``ADAPT_TRANSITIONS``);
    every write refreshes ``updated_at`` (the heartbeat a stale check reads)."""
    unknown = set(progress) - PROGRESS_FIELDS
    if unknown:
        raise ValueError(f"unknown adaptation fields {sorted(unknown)}")
    with store.session() as s:
        row = s.get(AdaptationRow, adaptation_id)
        if row is None:
            raise NotFoundError(f"no adaptation {adaptation_id}")
        for key, value in progress.items():
            if key in ("loss", "heldout_loss", "seconds"):
                value = _finite(value)
            elif key in ("folder", "key"):
                value = None if value is None else str(value)
                if key == "key" and value is not None:
                    check_string("adaptation key", value, AdaptationRow.key)
            else:
                value = int(value)
            setattr(row, key, value)
        now = store.clock()
        if status is not None:
            nxt = check_adapt_transition(row.status, status)
            if nxt.is_final:
                row.finished_at = now
            row.status = nxt.value
        if error is not None:
            row.error = error.replace("\x00", "")[:4000]
        row.updated_at = now
        s.flush()
        return _record(row)


__all__ = ["ABANDONED", "Adaptation", "create_adaptation", "done_adaptation", "get_adaptation", "latest_adaptation",
           "update_adaptation"]
