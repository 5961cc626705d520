"""A round's pool scoring in bounded memory: the pool snapshot, shard jobs, and the exact merge.

1. :class:`PoolSnapshot` writes the unlabelled ids (read from the store in chunks) to a JSON-lines
   file in the round's scratch folder, applying the optional ``max_pool_scored`` subsample: the
   round and its shards read the same positions, whatever labels arrive meanwhile.
2. The pool is cut into ``score_shards`` contiguous position ranges (:func:`shard_ranges`). A shard
   job (:class:`ShardJob`, JSON) is scored by :func:`run_shard_job` chunk by chunk and leaves its
   result in ``shard-<i>/`` (written atomically: a redelivered job that finds it does nothing).
   A :data:`ShardRunner` runs the jobs: :func:`run_in_process` here, a Celery group in
   ``annotator_bridge.worker`` (this package never imports Celery).
3. :func:`~al_loop.rounds.pool_scoring.merge_results` folds the shard results and
   :func:`~al_loop.rounds.pool_select.rank_result` selects and ranks.

The selection shuffle of the stream mode (``rng.permutation(N)``, the draw ``top_n`` makes) is
drawn here before scoring and saved as each position's place in it (``keys.npy``, 8 bytes per
pool item, the one array that grows with the pool).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from al_loop.data.schema import LabelSchema
from al_loop.rounds.pool_scoring import (
    BaseEmbed,
    ScoringSpec,
    ShardResult,
    Spool,
    load_result,
    merge_results,
    predict_rows,
    save_result,
    score_shard,
)
from al_loop.rounds.pool_select import LabelledSpaces, NeedMoreCandidates, rank_result
from al_loop.store.records import ScoredItem
from al_loop.strategies import DedupedStrategy, Strategy
from al_loop.strategies.topk import inverse_permutation
from al_loop.types import ItemId

log = logging.getLogger("al_loop.rounds")

__all__ = [
    "PoolScoring",
    "PoolSnapshot",
    "ShardJob",
    "ShardRunner",
    "draw_keys",
    "run_in_process",
    "run_shard_job",
    "score_and_rank",
    "shard_ranges",
]

TextsOf = Callable[[Sequence[ItemId]], Sequence[str]]


class PoolSnapshot:
    """The scored pool's item ids, one JSON string per line of ``<folder>/pool-ids.jsonl``."""

    def __init__(self, path: str | Path, n: int) -> None:
        self.path = Path(path)
        self.n = n

    @classmethod
    def write(
        cls,
        folder: str | Path,
        id_chunks: Iterable[Sequence[ItemId]],
        *,
        max_pool_scored: int = 0,
        rng: np.random.Generator | None = None,
    ) -> PoolSnapshot:
        """Snapshot the ids; with ``max_pool_scored`` below the pool size keep that many positions drawn
        from ``rng`` exactly as the round always did (``np.sort(rng.choice(N, m, replace=False))``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "pool-ids.jsonl"
        n = 0
        with open(path, "w", encoding="utf-8") as fh:
            for chunk in id_chunks:
                for item_id in chunk:
                    fh.write(json.dumps(str(item_id)) + "\n")
                    n += 1
        if max_pool_scored and n > max_pool_scored:
            if rng is None:
                raise ValueError("a subsample needs an rng")
            keep = np.sort(rng.choice(n, size=max_pool_scored, replace=False))
            sub = folder / "pool-ids.sub.jsonl"
            with open(path, encoding="utf-8") as src, open(sub, "w", encoding="utf-8") as dst:
                j = 0
                for i, line in enumerate(src):
                    if j < len(keep) and keep[j] == i:
                        dst.write(line)
                        j += 1
            sub.replace(path)
            n = int(max_pool_scored)
        return cls(path, n)

    def chunks(self, size: int, start: int = 0, stop: int | None = None) -> Iterator[list[ItemId]]:
        """Ids of positions ``[start, stop)`` in lists of at most ``size``."""
        stop = self.n if stop is None else stop
        buf: list[ItemId] = []
        with open(self.path, encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= stop:
                    break
                if i < start:
                    continue
                buf.append(ItemId(json.loads(line)))
                if len(buf) >= size:
                    yield buf
                    buf = []
        if buf:
            yield buf

    def all_ids(self) -> list[ItemId]:
        return [i for chunk in self.chunks(65536) for i in chunk]


def shard_ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``[start, stop)`` ranges covering ``0..n`` (sizes differ by at most one; no empty one)."""
    shards = max(1, min(int(shards), n)) if n else 1
    bounds = [round(i * n / shards) for i in range(shards + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(shards)]


def draw_keys(folder: str | Path, n: int, rng: np.random.Generator) -> Path:
    """Draw the selection shuffle ``rng.permutation(n)`` and save each position's place in it."""
    path = Path(folder) / "keys.npy"
    np.save(path, inverse_permutation(rng.permutation(n)))
    return path


@dataclass(frozen=True)
class ShardJob:
    """One shard of a round's pool (JSON-able: ``asdict`` travels as a Celery task argument)."""

    round_id: int
    project_id: int
    folder: str
    shard: int
    start: int
    stop: int
    n: int
    spec: dict[str, Any]
    artifact: str = ""
    scan: int = 0  # 1, 2, ...: a rescan keeping more candidates for the near-duplicate filter

    @property
    def result_dir(self) -> Path:
        return Path(self.folder) / f"shard-{self.scan}-{self.shard}"

    @property
    def failed_marker(self) -> Path:
        return Path(self.folder) / f"shard-{self.scan}-{self.shard}.failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardJob:
        return cls(**data)


ShardRunner = Callable[[Sequence[ShardJob], Callable[[int], None]], list[ShardResult]]
"""Runs shard jobs and returns their results in job order; the callback gets the number of jobs done
(the round's heartbeat). Raises :class:`~al_loop.errors.AlLoopError` when a shard failed."""


def _texts_chunks(ids_chunks: Iterable[list[ItemId]], texts_of: TextsOf) -> Iterator[tuple[list[ItemId], list[str]]]:
    for ids in ids_chunks:
        yield ids, list(texts_of(ids))


def run_shard_job(
    job: ShardJob,
    model: Any,
    texts_of: TextsOf,
    base_embed: BaseEmbed | None = None,
    on_chunk: Callable[[int], None] | None = None,
    *,
    persist: bool = True,
) -> ShardResult:
    """Score one shard; with ``persist`` the result is saved to ``job.result_dir`` and a result already
    there is loaded instead of scoring again (a redelivered job)."""
    if persist and (job.result_dir / "meta.json").exists():
        return load_result(job.result_dir)
    spec = ScoringSpec.from_dict(job.spec)
    snapshot = PoolSnapshot(Path(job.folder) / "pool-ids.jsonl", job.n)
    keys = None
    if spec.mode == "stream":
        keys = np.load(Path(job.folder) / "keys.npy", mmap_mode="r", allow_pickle=False)[job.start : job.stop]
    spool = None
    if spec.mode == "full":  # files of this run only: a duplicate run (redelivery) writes its own
        spool = Spool(job.folder, f"{job.scan}-{job.shard}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    result = score_shard(
        model,
        spec,
        _texts_chunks(snapshot.chunks(spec.chunk_size, job.start, job.stop), texts_of),
        start=job.start,
        keys=keys,
        spool=spool,
        base_embed=base_embed,
        on_chunk=on_chunk,
    )
    if persist:
        save_result(result, job.result_dir)
    return result


def run_in_process(
    model: Any, texts_of: TextsOf, base_embed: BaseEmbed | None, on_rows: Callable[[int], None] | None = None
) -> ShardRunner:
    """A runner that scores the shards one after the other with the round's own model."""

    def run(jobs: Sequence[ShardJob], progress: Callable[[int], None]) -> list[ShardResult]:
        out = []
        for i, job in enumerate(jobs):
            offset = job.start
            rows_done = (lambda done, o=offset: on_rows(o + done)) if on_rows else None
            out.append(run_shard_job(job, model, texts_of, base_embed, rows_done, persist=len(jobs) > 1))
            progress(i + 1)
        return out

    return run


@dataclass
class PoolScoring:
    """Everything :func:`score_and_rank` needs besides the model (the service fills it in)."""

    strategy: Strategy
    schema: LabelSchema
    spec: ScoringSpec
    snapshot: PoolSnapshot
    folder: Path
    n: int
    labelled_texts: Sequence[str]
    texts_of: TextsOf
    base_embed: BaseEmbed | None = None
    shards: int = 1
    round_id: int = 0
    project_id: int = 0
    artifact: str = ""


def _labelled_spaces(model: Any, job: PoolScoring, used_base: bool) -> LabelledSpaces:
    """The labelled embeddings the selection needs (exactly the ones :func:`rank_pool` computed)."""
    strategy = job.strategy
    inner = strategy.inner if isinstance(strategy, DedupedStrategy) else strategy
    texts = list(job.labelled_texts)
    wants_model = inner.needs_embeddings or (isinstance(strategy, DedupedStrategy) and not job.spec.base_embed)
    model_emb = base_emb = None
    if wants_model and texts:
        size = job.spec.chunk_size
        parts = [model.predict(texts[i : i + size], embeddings=True).embeddings for i in range(0, len(texts), size)]
        model_emb = np.concatenate([np.asarray(p) for p in parts])
    if used_base and texts and job.base_embed is not None:
        base = job.base_embed(texts)
        base_emb = None if base is None else np.asarray(base)
    return LabelledSpaces(model=model_emb, base=base_emb)


def _predict_rows(model: Any, spec: ScoringSpec, texts_of: TextsOf, ids: Sequence[ItemId]) -> list[Any]:
    return predict_rows(model, spec, ids, texts_of(ids))


def score_and_rank(
    model: Any,
    job: PoolScoring,
    rng: np.random.Generator,
    runner: ShardRunner,
    *,
    timings: dict[str, float],
    on_scored: Callable[[], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ScoredItem]:
    """Score the snapshot in shards with ``runner``, merge, select ``job.n`` and rank the stored rows."""
    t0 = time.perf_counter()
    spec = job.spec
    if spec.mode == "stream":
        draw_keys(job.folder, job.snapshot.n, rng)
    scan = 0
    while True:
        jobs = [
            ShardJob(job.round_id, job.project_id, str(job.folder), i, start, stop, job.snapshot.n, spec.to_dict(),
                     job.artifact, scan)
            for i, (start, stop) in enumerate(shard_ranges(job.snapshot.n, job.shards))
        ]
        merged = merge_results(runner(jobs, progress or (lambda _done: None)), spec)
        if scan == 0:
            labelled = _labelled_spaces(model, job, merged.used_base)
            timings["score"] = time.perf_counter() - t0
            if on_scored is not None:
                on_scored()
            t0 = time.perf_counter()
        try:
            scored, _ = rank_result(
                merged, spec, job.strategy, job.n, rng, labelled,
                item_ids=job.snapshot.all_ids,
                predict_rows=partial(_predict_rows, model, spec, job.texts_of),
                folder=job.folder,
            )
        except NeedMoreCandidates as more:
            scan += 1
            log.warning("near-duplicate filter: the %d kept candidates were not enough; scoring the pool again "
                        "keeping %d", spec.candidates, 4 * more.size)
            spec = replace(spec, candidates=4 * more.size)
            continue
        timings["select"] = time.perf_counter() - t0
        return scored
