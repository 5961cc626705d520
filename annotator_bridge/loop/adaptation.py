"""``PoolAdaptation``: a project's pool-adaptive pretraining in the live loop (opt-in, run once on a worker).

Masked-LM training of the project's base encoder on its unlabelled pool (``al_loop.models.adapt.adapt_encoder``),
bounded by ``loop.adapt_steps`` / ``adapt_minutes`` / ``adapt_texts``; the adapted encoder is cached under
``<artifacts>/project-<id>/adapted/<key>/`` and recorded in the ``adaptations`` table, and every later round of
the project starts from it (``RoundService.adapted_base``; the version's manifest records ``adapted_base``).

Two ways in, both ending in :meth:`PoolAdaptation.execute` on a training worker:

- ``POST /api/projects/<id>/adapt`` -> :meth:`start`: a ``pending`` row, dispatched (``run_adaptation`` task on the
  train queue; the single-process server's thread);
- a round of a project with ``loop.adapt_pool`` -> :meth:`ensure_adapted`, called by the round's task before it
  trains: with no adaptation of the project's base model yet it adapts there and then (the round waits, pending),
  a pending one is run there, a done one is used, a failed one is logged and the round trains from the base model
  (``POST .../adapt`` retries), one running on another worker is a ConflictError (the round task retries later).

Progress (steps, loss) is written at most once per ``progress_interval`` seconds and at the last step; the row's
``updated_at`` is its heartbeat. Errors end the row ``failed`` with a message for users (never a traceback).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from al_loop.errors import AlLoopError, ConfigError, ConflictError, EmptyInputError
from al_loop.rounds.service import RoundService
from al_loop.states import AdaptStatus
from al_loop.store.adaptations import (
    Adaptation,
    create_adaptation,
    get_adaptation,
    latest_adaptation,
    update_adaptation,
)
from al_loop.store.records import Project
from al_loop.store.repository import Store, unlabelled_id_chunks
from al_loop.store.sources import resolve_base_model
from annotator_bridge.dispatch import Dispatcher

log = logging.getLogger("annotator_bridge.loop")

Adapter = Callable[..., Any]
"""``adapt_encoder``'s signature: ``(base_model_path, texts, cache_root, budget, *, device, progress, precision)``
returning an ``AdaptResult`` (``folder``, ``steps``, ``seconds``, ``texts``, ``loss_last``)."""


def _adapt_encoder(*args: Any, **kwargs: Any) -> Any:
    from al_loop.models.adapt import adapt_encoder  # torch: imported by the worker that adapts, never the web

    return adapt_encoder(*args, **kwargs)


def pool_texts(store: Store, project_id: int, limit: int, seed: int, chunk: int = 10_000) -> list[str]:
    """The project's unlabelled pool texts, in row order; at most ``limit``: a seeded sample (positions drawn
    from the pool's count, ids then read in keyset pages), so a huge pool is never held at once."""
    total = sum(len(ids) for ids in unlabelled_id_chunks(store, project_id, chunk))
    wanted: set[int] | None = None
    if total > limit:
        rng = np.random.default_rng(seed)
        wanted = {int(i) for i in rng.choice(total, size=limit, replace=False)}
    texts: list[str] = []
    start = 0
    for ids in unlabelled_id_chunks(store, project_id, chunk):
        picked = ids if wanted is None else [i for k, i in enumerate(ids, start) if k in wanted]
        start += len(ids)
        if picked:
            texts.extend(item.text for item in store.get_items(project_id, picked))
        if len(texts) >= limit:
            break
    return texts[:limit]


class PoolAdaptation:
    """Start, run and look up a project's adaptation (see the module docstring)."""

    progress_interval = 1.0
    """Seconds between two progress writes (the last step is always written)."""

    def __init__(self, store: Store, rounds: RoundService, *, dispatcher: Callable[[], Dispatcher],
                 adapter: Adapter | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.rounds = rounds
        self._dispatcher = dispatcher
        self.adapter: Adapter = adapter or _adapt_encoder
        self._monotonic = monotonic

    def cache_root(self, project_id: int) -> Path:
        if self.rounds.artifacts_root is None:
            raise ConfigError("pool-adaptive pretraining needs an artifacts folder (AL_LOOP_HOME)")
        return self.rounds.artifacts_root / f"project-{project_id}" / "adapted"

    def start(self, project_id: int) -> Adaptation:
        """A new ``pending`` adaptation of the project, dispatched to a training worker (ConflictError while one
        is active; a dispatch that fails marks it failed and raises)."""
        project = self.store.get_project(project_id)
        self.cache_root(project_id)  # ConfigError (400) before anything is queued
        adaptation = self._create(project)
        try:
            self._dispatcher().run_adaptation(adaptation.id)
        except Exception as exc:
            current = get_adaptation(self.store, None, adaptation.id)
            if current.status is AdaptStatus.PENDING:
                update_adaptation(self.store, adaptation.id, status=AdaptStatus.FAILED,
                                  error=f"could not be queued ({type(exc).__name__})")
            raise
        return get_adaptation(self.store, project_id, adaptation.id)

    def _create(self, project: Project) -> Adaptation:
        return create_adaptation(self.store, project.id, project.base_model, project.loop.adapt_steps,
                                 stale_after=self.rounds.stale_after)

    def ensure_adapted(self, project_id: int) -> Adaptation | None:
        """Before a round of a project with ``loop.adapt_pool``: make sure its adaptation was tried (see the module
        docstring). Returns the adaptation the round starts from (None: off, or failed)."""
        project = self.store.get_project(project_id)
        if not project.loop.adapt_pool:
            return None
        latest = latest_adaptation(self.store, project_id, project.base_model)
        if latest is not None and latest.status is AdaptStatus.DONE:
            return latest
        if latest is not None and latest.status is AdaptStatus.FAILED:
            log.warning("project %s: pool-adaptive pretraining failed (%s); the round starts from the base model",
                        project_id, latest.error)
            return None
        if latest is not None and latest.status is AdaptStatus.PENDING:
            done = self.execute(latest.id)
        else:
            try:  # none yet, or running elsewhere: ConflictError unless its progress went stale
                done = self.execute(self._create(project).id)
            except ConflictError:
                log.info("project %s: pool-adaptive pretraining runs on another worker; the round waits", project_id)
                raise
        return done if done.status is AdaptStatus.DONE else None

    def execute(self, adaptation_id: int) -> Adaptation:
        """Run a ``pending`` adaptation to its end (a worker's task; one already started or finished is returned
        as it is). An error ends it ``failed`` (returned, not raised; a worker shutdown is raised)."""
        adaptation = get_adaptation(self.store, None, adaptation_id)
        if adaptation.status is not AdaptStatus.PENDING:
            log.info("adaptation %s is %s; duplicate delivery ignored", adaptation_id, adaptation.status)
            return adaptation
        project = self.store.get_project(adaptation.project_id)
        update_adaptation(self.store, adaptation_id, status=AdaptStatus.RUNNING)
        try:
            return self._run(project, adaptation)
        except AlLoopError as exc:
            log.warning("project %s: adaptation %s failed: %s", project.id, adaptation_id, exc)
            return update_adaptation(self.store, adaptation_id, status=AdaptStatus.FAILED, error=str(exc))
        except Exception as exc:
            log.exception("project %s: adaptation %s crashed", project.id, adaptation_id)
            return update_adaptation(self.store, adaptation_id, status=AdaptStatus.FAILED,
                                     error=f"internal error ({type(exc).__name__}); see the worker's log")
        except BaseException as exc:
            update_adaptation(self.store, adaptation_id, status=AdaptStatus.FAILED,
                              error=f"interrupted ({type(exc).__name__})")
            raise

    def _run(self, project: Project, adaptation: Adaptation) -> Adaptation:
        from al_loop.models.adapt import AdaptBudget, read_adapt_manifest  # torch, in the worker only

        loop, training = project.loop, project.training
        base = resolve_base_model(self.store, adaptation.base_model)
        texts = pool_texts(self.store, project.id, loop.adapt_texts, loop.seed)
        if not texts:
            raise EmptyInputError("the project's pool has no unlabelled texts to adapt the encoder on")
        budget = AdaptBudget(max_steps=loop.adapt_steps, max_seconds=loop.adapt_minutes * 60.0,
                             max_texts=loop.adapt_texts, max_length=min(training.max_length, 512), seed=loop.seed)
        update_adaptation(self.store, adaptation.id, texts=len(texts), steps_total=budget.max_steps)
        log.info("project %s: adaptation %s of %s on %d pool texts (%d steps, %.1f minutes at most)", project.id,
                 adaptation.id, adaptation.base_model, len(texts), budget.max_steps, loop.adapt_minutes)
        result = self.adapter(base, texts, self.cache_root(project.id), budget, device=training.device,
                              progress=self._progress_writer(adaptation.id), precision=training.precision)
        manifest = read_adapt_manifest(result.folder) or {}
        heldout = manifest.get("heldout_loss")
        done = update_adaptation(
            self.store, adaptation.id, status=AdaptStatus.DONE, steps_done=int(result.steps), texts=int(result.texts),
            loss=float(result.loss_last), heldout_loss=float(heldout) if isinstance(heldout, (int, float)) else None,
            seconds=float(result.seconds), folder=str(result.folder),
            key=str(manifest.get("key") or Path(result.folder).name))
        log.info("project %s: adaptation %s done%s: %s steps, MLM loss %.3f; rounds start from %s", project.id,
                 done.id, " (cached)" if getattr(result, "cached", False) else "", done.steps_done,
                 float(result.loss_last), done.folder)
        return done

    def _progress_writer(self, adaptation_id: int) -> Callable[[int, int, float], None]:
        last = [float("-inf")]

        def write(step: int, total: int, loss: float) -> None:
            now = self._monotonic()
            if step < total and now - last[0] < self.progress_interval:
                return
            last[0] = now
            update_adaptation(self.store, adaptation_id, steps_done=step, steps_total=total, loss=loss)

        return write


__all__ = ["Adapter", "PoolAdaptation", "pool_texts"]
