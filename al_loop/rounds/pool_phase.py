"""The pool phases of a round (cold start, score + select) over a :class:`~al_loop.rounds.pool_round.PoolSnapshot`.

:func:`score_pool` picks the path: strategies that :func:`~al_loop.rounds.pool_scoring.plan_scoring`
knows (every registered one) are scored chunk by chunk, in ``score_shards`` shards, through the
given shard runner (in process by default); any other strategy is scored in one call by
:func:`~al_loop.rounds.scoring.rank_pool`, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from al_loop.config import LoopConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError
from al_loop.rounds.pool_round import PoolScoring, PoolSnapshot, ShardRunner, run_in_process, score_and_rank
from al_loop.rounds.pool_scoring import BaseEmbed, plan_scoring
from al_loop.rounds.scoring import rank_pool
from al_loop.store.records import ScoredItem
from al_loop.strategies import PoolView, Strategy, cold_start
from al_loop.types import ItemId

__all__ = ["cold_start_scores", "score_pool"]

log = logging.getLogger("al_loop.rounds")

TextsOf = Callable[[Sequence[ItemId]], Sequence[str]]


def runner_available(runner: ShardRunner) -> bool:
    """False when ``runner`` says it has nobody to run shards (its optional ``available()``); the shards
    then run in the round's process, which selects the same items."""
    available = getattr(runner, "available", None)
    return True if available is None else bool(available())


def cold_start_scores(
    snapshot: PoolSnapshot,
    batch_size: int,
    method: str,
    rng: np.random.Generator,
    texts_of: TextsOf,
    embed: Callable[[Sequence[str]], np.ndarray],
    chunk_size: int,
    max_stored: int,
) -> list[ScoredItem]:
    """The first batch without a model: ``random`` or ``diversity`` (k-means on base embeddings, computed
    chunk by chunk); the others follow in a random order. At most ``max(max_stored, batch)`` rows.

    The ids of the pool are held in memory (about 100 bytes an item); the diversity method also holds
    every embedding (k-means needs them): on a huge pool use ``max_pool_scored`` for the first round.
    """
    if not snapshot.n:
        return []
    ids = tuple(snapshot.all_ids())
    embeddings = None
    if method == "diversity":
        parts = [np.asarray(embed(list(texts_of(chunk)))) for chunk in snapshot.chunks(chunk_size)]
        embeddings = np.concatenate(parts)
    view = PoolView(item_ids=ids, embeddings=embeddings)
    selection = cold_start(view, min(batch_size, len(ids)), rng, method)
    chosen = list(selection.item_ids)
    taken = set(chosen)
    rest = [i for i in ids if i not in taken]
    order = rng.permutation(len(rest))
    keep = max(max_stored, len(chosen)) - len(chosen)
    ranked = chosen + [rest[int(i)] for i in order[:keep]]
    n = len(ids)
    return [ScoredItem(item, rank, float(n - rank), rank < len(chosen), None) for rank, item in enumerate(ranked)]


def score_pool(
    model: Any,
    strategy: Strategy,
    schema: LabelSchema,
    loop: LoopConfig,
    snapshot: PoolSnapshot,
    folder: Path,
    n: int,
    labelled_texts: Sequence[str],
    rng: np.random.Generator,
    texts_of: TextsOf,
    *,
    timings: dict[str, float],
    base_embed: BaseEmbed | None = None,
    shard_runner: ShardRunner | None = None,
    ids: tuple[int, int, str] = (0, 0, ""),
    on_scored: Callable[[], None] | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[ScoredItem]:
    """Score ``snapshot`` with ``model``, select ``n`` with ``strategy`` and rank the stored rows.

    ``ids``: (round id, project id, model artifact folder) for shard jobs. ``shard_runner`` runs
    ``loop.score_shards > 1`` shards elsewhere (Celery); without one the shards run here, one after another.
    """
    spec = plan_scoring(
        strategy, schema, n, stored=loop.max_scores_stored, chunk_size=loop.score_chunk_size,
        base_embed=base_embed is not None,
    )
    if spec is None:  # a strategy the chunked scorer does not know: one call over the whole pool
        pool_ids = snapshot.all_ids()
        return rank_pool(model, strategy, schema, pool_ids, list(texts_of(pool_ids)), labelled_texts, n, rng,
                         timings=timings, base_embed=base_embed, on_scored=on_scored)
    shards = max(1, min(loop.score_shards, snapshot.n))
    runner = shard_runner if shards > 1 and shard_runner is not None else None
    if runner is not None and not runner_available(runner):
        log.warning("score_shards %d: no worker consumes the score shards; scoring the %d shards in this process",
                    shards, shards)
        runner = None
    if runner is not None and not ids[2]:
        raise ConfigError("score_shards > 1 with shard workers needs the model saved to the artifacts folder")
    total = snapshot.n

    def rows_done(done: int) -> None:
        if progress is not None:
            progress(done / total)

    if runner is None:
        runner = run_in_process(model, texts_of, base_embed, rows_done)
    job = PoolScoring(strategy, schema, spec, snapshot, folder, n, labelled_texts, texts_of, base_embed, shards,
                      ids[0], ids[1], ids[2])
    t0 = time.perf_counter()
    scored = score_and_rank(model, job, rng, runner, timings=timings, on_scored=on_scored,
                            progress=lambda done: rows_done(int(total * done / shards)))
    log.debug("pool of %d scored in %d shard(s) of chunks of %d in %.2f s", total, shards, spec.chunk_size,
              time.perf_counter() - t0)
    return scored
