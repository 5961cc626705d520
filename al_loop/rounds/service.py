"""RoundService: one round = label snapshot -> train -> evaluate -> publish -> score pool -> select.

The same service runs in Celery workers (live loop) and in ``al-loop simulate`` (oracle loop).
It receives its collaborators (store, model factory, strategy factory, artifact root, clock)
and never reads the environment.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from al_loop.config import TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import AlLoopError, ConflictError, NotFoundError
from al_loop.rounds.estimate import EstimateChain
from al_loop.rounds.learning import fit_round_model
from al_loop.rounds.pool_phase import cold_start_scores, score_pool
from al_loop.rounds.pool_round import PoolSnapshot, ShardJob, ShardRunner, run_shard_job
from al_loop.rounds.pool_scoring import ShardResult
from al_loop.rounds.states import RoundPhase, RoundStatus, VersionStatus
from al_loop.rounds.stop_phase import run_stop_phase
from al_loop.store.adaptations import done_adaptation
from al_loop.store.records import ModelVersion, Project, Round, ScoredItem
from al_loop.store.repository import Store, unlabelled_id_chunks, utcnow
from al_loop.store.sources import resolve_base_model
from al_loop.strategies import DedupedStrategy, Strategy, make_strategy
from al_loop.types import Example, ItemId, TaskKind

log = logging.getLogger("al_loop.rounds")


class TrainedModel(Protocol):
    """What a round needs from a model (``al_loop.models.TextModel`` satisfies it)."""

    schema: LabelSchema

    def fit(self, examples: Sequence[Example], *, progress: Callable[[float], None] | None = None) -> Any: ...

    def predict(self, texts: Sequence[str], *, embeddings: bool = True) -> Any: ...

    def evaluate(self, examples: Sequence[Example]) -> dict[str, Any]: ...

    def save(self, artifact_dir: str | Path, extra_manifest: dict[str, Any] | None = None) -> Path: ...


class ModelFactory(Protocol):
    def create(
        self,
        schema: LabelSchema,
        base_model: str = ...,
        config: TrainingConfig = ...,
        init_from: str | Path | None = None,
    ) -> TrainedModel: ...

    def load(self, artifact_dir: str | Path, config: TrainingConfig | None = None) -> TrainedModel: ...


def default_model_factory() -> ModelFactory:
    """The transformers-backed factory (imports torch lazily, on first use)."""
    from al_loop.models.learners import Learners

    return Learners  # type: ignore[return-value]


@dataclass(frozen=True)
class RoundOutcome:
    round: Round
    ran: bool  # False when the round was already final (redelivered task)


def version_name(round_index: int, schema: LabelSchema) -> str:
    """Model version string, also used as Label Studio's ``model_version``."""
    return f"al-r{round_index:03d}-{schema.hash[:8]}"


def cold_version_tag(round_index: int, schema: LabelSchema) -> str:
    return f"al-r{round_index:03d}-cold-{schema.hash[:8]}"


@dataclass(frozen=True)
class ResolvedBase:
    """What a round trains from: the model path the factory takes, and the pool adaptation it is (or None)."""

    path: str
    adapted: dict[str, Any] | None


class RoundService:
    """Creates and runs rounds; promotes and rolls back model versions."""

    def __init__(
        self,
        store: Store,
        model_factory: ModelFactory | None = None,
        artifacts_root: str | Path | None = None,
        *,
        strategy_factory: Callable[[str, TaskKind], Strategy] = make_strategy,
        clock: Callable[[], datetime] = utcnow,
        owner: str = "local",
        stale_after: timedelta = timedelta(minutes=10),
        keep_artifacts: int | None = None,
        shard_runner: ShardRunner | None = None,
    ) -> None:
        self.store = store
        self.shard_runner = shard_runner  # runs score shards elsewhere (Celery workers); None: in this process
        self._shard_model: tuple[str, TrainedModel] | None = None
        self._factory = model_factory
        self.artifacts_root = Path(artifacts_root) if artifacts_root is not None else None
        self.strategy_factory = strategy_factory
        self.clock = clock
        self.owner = owner
        self.stale_after = stale_after
        self.keep_artifacts = keep_artifacts

    @property
    def factory(self) -> ModelFactory:
        if self._factory is None:
            self._factory = default_model_factory()
        return self._factory

    # ------------------------------------------------------------------ rounds
    def create_round(self, project_id: int, trigger: str = "api", *, batch_size: int | None = None) -> Round:
        """Queue the next round (ConflictError while one is active)."""
        project = self.store.get_project(project_id)
        loop = project.loop
        first = not self.store.list_rounds(project_id)
        labelled = bool(self.store.labelled_examples(project_id)) if first else True
        size = batch_size or (loop.seed_size if first and not labelled else loop.batch_size)
        self.strategy_factory(loop.strategy, project.task)  # fail early on a bad strategy name
        return self.store.create_round(
            project_id, trigger=trigger, strategy=loop.strategy, batch_size=size, seed=loop.seed
        )

    def should_start_round(self, project_id: int) -> bool:
        """Policy: enough new labels since the last round and nothing running; with ``loop.pause_when_stable``
        also not once the newest trained round found stabilizing predictions (a round asked for by hand,
        :meth:`create_round`, still runs)."""
        project = self.store.get_project(project_id)
        every = project.loop.retrain_every
        if every <= 0 or self.store.active_round(project_id) is not None:
            return False
        if self.store.new_labels_since_last_round(project_id) < every:
            return False
        if project.loop.pause_when_stable and predictions_stable(self.store.list_rounds(project_id)):
            log.info("project %s: predictions are stable (pause_when_stable): no automatic round", project_id)
            return False
        return True

    def run_round(self, round_id: int, *, select: bool = True) -> RoundOutcome:
        """Run a round to the end. Idempotent: a final round is returned unchanged (``ran=False``).

        ``select=False`` trains, evaluates and publishes but neither scores the pool nor selects a
        batch (the last round of a simulation, whose selection nobody would label); a round without
        labels (cold start) always selects.

        Raises ConflictError when another live worker owns the round. A user-caused error
        (AlLoopError) marks the round failed and is returned in ``round.error``; anything
        else marks it failed and propagates.
        """
        claimed = self.store.claim_round(round_id, self.owner, self.stale_after)
        if claimed is None:
            return RoundOutcome(self.store.get_round(round_id), ran=False)
        project = self.store.get_project(claimed.project_id)
        log.info("round start", extra={"project": project.id, "round": claimed.index})
        try:
            done = self._run(project, claimed, select=select)
        except AlLoopError as exc:
            log.warning("round %s of project %s failed: %s", claimed.index, project.id, exc)
            failed = self.store.update_round(round_id, status=RoundStatus.FAILED, error=str(exc), phase="done")
            return RoundOutcome(failed, ran=True)
        except Exception as exc:
            log.exception("round %s of project %s crashed", claimed.index, project.id)
            self.store.update_round(
                round_id, status=RoundStatus.FAILED, error=f"internal error: {type(exc).__name__}: {exc}", phase="done"
            )
            raise
        return RoundOutcome(done, ran=True)

    def _run(self, project: Project, rnd: Round, *, select: bool = True) -> Round:
        schema = project.schema
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        rng = np.random.default_rng([rnd.seed, rnd.index])
        heart = _Heartbeat(self.store, rnd.id)

        # 1. snapshot
        heart.phase(RoundPhase.SNAPSHOT, 0.01)
        t0 = time.perf_counter()
        labelled = self.store.labelled_examples(project.id)
        for ex in labelled:
            schema.check_example(ex)
        scratch = self._scratch_folder(project, rnd)
        try:
            return self._run_with_pool(project, rnd, labelled, rng, heart, scratch, timings, (t_start, t0),
                                       select=select)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _run_with_pool(
        self,
        project: Project,
        rnd: Round,
        labelled: list[Example],
        rng: np.random.Generator,
        heart: _Heartbeat,
        scratch: Path,
        timings: dict[str, float],
        started: tuple[float, float],
        *,
        select: bool,
    ) -> Round:
        schema, loop, training = project.schema, project.loop, project.training
        t_start, t0 = started
        base = self._resolve_base(project)  # once per round: the manifest names what the round trained from
        ids = unlabelled_id_chunks(self.store, project.id, max(loop.score_chunk_size, 1024))
        snapshot = PoolSnapshot.write(scratch, ids if select or not labelled else (),
                                      max_pool_scored=loop.max_pool_scored, rng=rng)
        n_tokens = sum(len(ex.text.split()) for ex in labelled)
        if schema.task is TaskKind.NER:
            words = {it.item_id: it.n_words for it in self.store.get_items(project.id, [e.item_id for e in labelled])}
            n_tokens = sum(words.values())
        self.store.update_round(rnd.id, n_labels=len(labelled), n_tokens=n_tokens)
        timings["snapshot"] = time.perf_counter() - t0

        version: ModelVersion | None = None
        metrics: dict[str, Any] = {}
        stopping: dict[str, Any] | None = None
        report: dict[str, Any] = {}
        train_report: dict[str, Any] = {}
        if not labelled:
            # cold start: nothing to train on yet
            t0 = time.perf_counter()
            heart.phase(RoundPhase.SELECT, 0.5)
            scored = self._cold_start(project, base.path, snapshot, rnd.batch_size, rng)
            tag = cold_version_tag(rnd.index, schema)
            timings["select"] = time.perf_counter() - t0
        else:
            # 2. train (the learner is chosen on held-out labels, never on the test split)
            heart.phase(RoundPhase.TRAIN, 0.05)
            t0 = time.perf_counter()
            versions = self.store.list_versions(project.id)
            promoted = self.store.promoted_version(project.id)
            init_from = (
                promoted.artifact_path if (training.warm_start and promoted and promoted.artifact_path) else None
            )
            test = self.store.test_examples(project.id)
            fitted = fit_round_model(
                self.factory,
                schema,
                base.path,
                training,
                labelled,
                previous_report=versions[-1].train_report if versions else None,
                need_estimate=not test,
                init_from=init_from,
                init_labels=int((promoted.train_report or {}).get("n_train") or 0) if init_from and promoted else None,
                estimate=self._estimate_chain(project),
                estimate_key=f"{base.path}|{schema.hash}",
                progress=lambda f: heart.progress(0.05 + 0.7 * f),
            )
            model = fitted.model
            train_report = fitted.report
            timings["train"] = time.perf_counter() - t0

            # 3. evaluate
            heart.phase(RoundPhase.EVALUATE, 0.76)
            t0 = time.perf_counter()
            if test:
                metrics = dict(model.evaluate(test))
                metrics["eval_set"] = f"test ({len(test)})"
            elif fitted.holdout_score is not None:
                metrics = {
                    "score": fitted.holdout_score,
                    "eval_set": f"held-out labels ({len(fitted.holdout)} of {len(labelled)})",
                }
            else:
                metrics = {"score": None, "eval_set": "none"}
            metrics["learner"] = train_report.get("learner", "")
            timings["evaluate"] = time.perf_counter() - t0

            # 4. publish
            heart.phase(RoundPhase.PUBLISH, 0.8)
            t0 = time.perf_counter()
            version = self._publish(project, rnd, model, metrics, train_report, test or fitted.holdout,
                                    adapted=base.adapted)
            tag = version.name
            timings["publish"] = time.perf_counter() - t0

            # 5. score the pool
            heart.phase(RoundPhase.SCORE, 0.82)
            t0 = time.perf_counter()
            scored = []
            if snapshot.n:
                scored = self._score_pool(project, rnd, model, version, labelled, snapshot, rng, heart, timings,
                                          scratch, learner=str(train_report.get("learner", "")), base_path=base.path)
            report = self._report(project, metrics, scored, self._items_of(project, scored[:10]))

            # 6. stopping advice: the round's model on the project's fixed stop set (al_loop/rounds/stopping.py)
            t0 = time.perf_counter()
            stop = run_stop_phase(self.store, project, rnd, model, [e.item_id for e in labelled], scored)
            if stop is not None:
                stopping, report["stop_set"] = stop
                timings["stopping"] = time.perf_counter() - t0

        self.store.save_scores(rnd.id, scored)
        timings["total"] = time.perf_counter() - t_start
        if not report:
            report = {"metrics": metrics, "top_uncertain": self._top(scored, self._items_of(project, scored[:10]))}
        report["scores"] = {"pool": snapshot.n, "stored": len(scored), "all_stored": len(scored) >= snapshot.n}
        if len(scored) < snapshot.n:
            log.info("round %s of project %s: pool of %d scored; stored (and pushed) the batch and the next %d "
                     "least confident items (max_scores_stored)", rnd.index, project.id, snapshot.n,
                     len(scored) - sum(s.selected for s in scored))
        return self.store.update_round(
            rnd.id,
            status=RoundStatus.SUCCEEDED,
            phase=RoundPhase.DONE.value,
            progress=1.0,
            version_tag=tag,
            model_version_id=version.id if version else None,
            metrics={**metrics, "train": train_report, **({"stopping": stopping} if stopping is not None else {})},
            timings={k: round(v, 3) for k, v in timings.items()},
            report=report,
            push_status="pending",
        )

    # ------------------------------------------------------------------ the pool
    def _scratch_folder(self, project: Project, rnd: Round) -> Path:
        """The round's scoring folder (pool snapshot, shard results, spooled embeddings); removed after the round.
        Under the artifacts folder, which shard workers share; per attempt, so a taken-over round starts clean."""
        if self.artifacts_root is None:
            return Path(tempfile.mkdtemp(prefix=f"al-loop-scoring-{rnd.id}-"))
        folder = self.artifacts_root / f"project-{project.id}" / "scoring" / f"round-{rnd.index}-{rnd.attempts}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def _texts_of(self, project_id: int) -> Callable[[Sequence[ItemId]], list[str]]:
        return lambda ids: [it.text for it in self.store.get_items(project_id, ids)]

    def _items_of(self, project: Project, scored: Sequence[ScoredItem]) -> list[Any]:
        return self.store.get_items(project.id, [s.item_id for s in scored]) if scored else []

    def _cold_start(self, project: Project, base_path: str, snapshot: PoolSnapshot, batch_size: int,
                    rng: np.random.Generator) -> list[ScoredItem]:
        def embed(texts: Sequence[str]) -> np.ndarray:
            emb = self._base_embeddings(project, base_path, texts)
            if emb is None:
                base = self.factory.create(project.schema, base_path, project.training)
                emb = base.predict(list(texts), embeddings=True).embeddings
            return np.asarray(emb)

        loop = project.loop
        return cold_start_scores(snapshot, batch_size, loop.cold_start, rng, self._texts_of(project.id), embed,
                                 loop.score_chunk_size, loop.max_scores_stored)

    def _score_pool(
        self,
        project: Project,
        rnd: Round,
        model: TrainedModel,
        version: ModelVersion,
        labelled: Sequence[Example],
        snapshot: PoolSnapshot,
        rng: np.random.Generator,
        heart: _Heartbeat,
        timings: dict[str, float],
        scratch: Path,
        *,
        learner: str,
        base_path: str,
    ) -> list[ScoredItem]:
        loop = project.loop
        strategy = self.strategy_factory(rnd.strategy, project.task)
        if loop.dedupe_threshold > 0:
            strategy = DedupedStrategy(strategy, loop.dedupe_threshold)
        # near-duplicates are judged on the frozen base model's embeddings (cached per text)
        base_embed = None
        if isinstance(strategy, DedupedStrategy) and learner != "head":
            base_embed = partial(self._base_embeddings, project, base_path)
        return score_pool(
            model, strategy, project.schema, loop, snapshot, scratch, min(rnd.batch_size, snapshot.n),
            [e.text for e in labelled], rng, self._texts_of(project.id),
            timings=timings, base_embed=base_embed, shard_runner=self.shard_runner,
            ids=(rnd.id, project.id, version.artifact_path),
            on_scored=lambda: heart.phase(RoundPhase.SELECT, 0.97),
            progress=lambda f: heart.progress(0.82 + 0.15 * f),
        )

    def score_shard(self, job: ShardJob) -> ShardResult:
        """Score one shard of a round's pool with the round's saved model (a shard worker's task; idempotent)."""
        project = self.store.get_project(job.project_id)
        if self._shard_model is None or self._shard_model[0] != job.artifact:
            self._shard_model = (job.artifact, self.factory.load(job.artifact, project.training))
        model = self._shard_model[1]
        base_embed = None
        if job.spec.get("base_embed"):  # resolved once per shard (the round resolved its own at its start)
            base_embed = partial(self._base_embeddings, project, self._resolve_base(project).path)
        return run_shard_job(job, model, self._texts_of(project.id), base_embed)

    def _estimate_chain(self, project: Project) -> EstimateChain | None:
        """Where the project's held-out estimate model is kept between rounds (none without an artifacts folder)."""
        if self.artifacts_root is None:
            return None
        return EstimateChain(self.artifacts_root / f"project-{project.id}" / "estimate")

    def _base_embeddings(self, project: Project, base_path: str, texts: Sequence[str]) -> np.ndarray | None:
        """Frozen base-model sentence embeddings from the head learner's cached encoder, or None when the
        factory's models cannot embed (test fakes)."""
        encoder = self.factory.create(project.schema, base_path, replace(project.training, learner="head"))
        embed = getattr(encoder, "embed", None)
        return np.asarray(embed(list(texts))) if callable(embed) else None

    def _resolve_base(self, project: Project) -> ResolvedBase:
        """The project's base model as the model factory takes it, resolved once per round: the folder of its
        pool-adapted encoder when an adaptation of its base model is done (:meth:`adapted_base`); otherwise another
        project's version (``project:<id>:<version>``) becomes its artifact folder (ConfigError, failing the round,
        when it is gone)."""
        adapted = self.adapted_base(project)
        if adapted is not None:
            return ResolvedBase(str(adapted["folder"]), adapted)
        return ResolvedBase(resolve_base_model(self.store, project.base_model), None)

    def adapted_base(self, project: Project) -> dict[str, Any] | None:
        """``{"folder", "key", "steps", "adaptation"}`` of the project's newest done pool-adaptive pretraining of
        its current base model whose folder is still there (al_loop/store/adaptations.py), or None."""
        done = done_adaptation(self.store, project.id, project.base_model)
        if done is None or not done.folder or not (Path(done.folder) / "config.json").is_file():
            if done is not None:
                log.warning("project %s: adapted encoder %s is gone; rounds use the base model", project.id,
                            done.folder)
            return None
        return {"folder": done.folder, "key": done.key, "steps": done.steps_done, "adaptation": done.id}

    def _publish(
        self,
        project: Project,
        rnd: Round,
        model: TrainedModel,
        metrics: dict[str, Any],
        train_report: dict[str, Any],
        evaluation: Sequence[Example] = (),
        *,
        adapted: dict[str, Any] | None = None,
    ) -> ModelVersion:
        schema = project.schema
        name = version_name(rnd.index, schema)
        path = ""
        if self.artifacts_root is not None:
            target = self.artifacts_root / f"project-{project.id}" / name
            extra: dict[str, Any] = {"project": project.id, "round": rnd.index, "metrics": _scalars(metrics),
                                     "base_model": project.base_model}
            if adapted is not None:
                extra["adapted_base"] = adapted
            model.save(target, extra_manifest=extra)
            path = str(target)
        previous = self.store.promoted_version(project.id)
        version = self.store.add_version(
            project.id,
            name=name,
            round_id=rnd.id,
            base_model=project.base_model,
            schema=schema,
            metrics=metrics,
            train_report=train_report,
            artifact_path=path,
        )
        policy = project.loop.promote
        better = True
        if policy == "if_better" and previous is not None:
            better = self._not_worse(project, previous, metrics, evaluation)
        if policy == "always" or (policy == "if_better" and better):
            version = self.store.promote(project.id, version.id)
        self._prune(project.id)
        return version

    def _not_worse(
        self, project: Project, previous: ModelVersion, metrics: dict[str, Any], evaluation: Sequence[Example]
    ) -> bool:
        """``if_better``: the candidate's score is at least the promoted version's on the same examples.

        ``evaluation`` is the test split (both models scored on it now) or, without one, the labels the
        candidate's learner was scored on while held out; the promoted version is scored on them too
        (it may have trained on some of them, which favours it: the candidate must beat it anyway).
        Without evaluation examples, or when the promoted artifact cannot be loaded, the stored scores
        are compared.
        """
        candidate = _score(metrics)
        if evaluation and previous.artifact_path:
            try:
                old = self.factory.load(previous.artifact_path, project.training)
                old_score = _score(dict(old.evaluate(list(evaluation))))
            except AlLoopError as exc:
                log.warning("cannot re-evaluate promoted version %s: %s", previous.name, exc)
            else:
                log.info("if_better: candidate %.4f vs promoted %s %.4f", candidate, previous.name, old_score)
                return candidate >= old_score
        return candidate >= _score(previous.metrics)

    def _prune(self, project_id: int) -> None:
        """Delete artifacts of old non-promoted versions beyond ``keep_artifacts`` (simulation)."""
        if self.keep_artifacts is None:
            return
        versions = [v for v in self.store.list_versions(project_id) if v.artifact_path]
        old = [v for v in versions[: -self.keep_artifacts or None] if v.status != VersionStatus.PROMOTED.value]
        for v in old:
            shutil.rmtree(v.artifact_path, ignore_errors=True)

    def _top(self, scored: Sequence[ScoredItem], items: Sequence[Any], k: int = 10) -> list[dict[str, Any]]:
        text = {it.item_id: it.text for it in items}
        return [
            {
                "item_id": s.item_id,
                "rank": s.rank,
                "score": s.score,
                "text": text.get(s.item_id, "")[:300],
                "prediction": s.prediction,
            }
            for s in scored[:k]
        ]

    def _report(
        self, project: Project, metrics: dict[str, Any], scored: Sequence[ScoredItem], items: Sequence[Any]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"metrics": _scalars(metrics), "per_label": metrics.get("per_label", {})}
        if "confusion" in metrics:
            out["confusion"] = metrics["confusion"]
        if "errors" in metrics:
            out["errors"] = metrics["errors"]
        out["top_uncertain"] = self._top(scored, items)
        return out

    # ---------------------------------------------------------- model versions
    def promote(self, project_id: int, version_id: int) -> ModelVersion:
        version = self.store.get_version(version_id)
        if version.project_id != project_id:
            raise NotFoundError(f"model version {version_id} not found in project {project_id}")
        if not version.artifact_path or not Path(version.artifact_path).exists():
            raise ConflictError(f"model version {version.name} has no artifact on disk")
        return self.store.promote(project_id, version_id)

    def rollback(self, project_id: int) -> ModelVersion:
        return self.store.rollback(project_id)


class _Heartbeat:
    """Throttled progress/heartbeat writes to the round row (at most every ``every`` seconds)."""

    def __init__(self, store: Store, round_id: int, every: float = 2.0) -> None:
        self.store, self.round_id, self.every = store, round_id, every
        self._last = 0.0

    def phase(self, phase: RoundPhase, progress: float) -> None:
        self.store.update_round(self.round_id, phase=phase.value, progress=round(progress, 3))
        self._last = time.monotonic()

    def progress(self, value: float) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self.store.update_round(self.round_id, progress=round(min(value, 1.0), 3))
            self._last = now


def predictions_stable(rounds: Sequence[Round]) -> bool:
    """Whether the newest succeeded round of ``rounds`` that recorded stopping criteria found stabilizing
    predictions (``metrics["stopping"]["holds"]["stabilizing_predictions"]``)."""
    for r in reversed(rounds):
        stopping = (r.metrics or {}).get("stopping") if r.status is RoundStatus.SUCCEEDED else None
        if isinstance(stopping, dict):
            return bool((stopping.get("holds") or {}).get("stabilizing_predictions"))
    return False


def _score(metrics: dict[str, Any]) -> float:
    value = metrics.get("score")
    return float(value) if isinstance(value, int | float) else float("-inf")


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str) or v is None}

