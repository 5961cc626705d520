"""Near-duplicate filter for batches: a batch never holds two texts whose embeddings nearly coincide.

Uncertainty sampling ranks copies of one uncertain text side by side, so a
batch can fill up with near-duplicates (a Label Studio user's complaint). The
filter walks a strategy's ranking greedily, most informative first, and skips
a candidate whose cosine similarity to an item already chosen for this batch,
or (optionally) to an already labelled item, is ``>= threshold``; when the
ranking runs out before ``n`` items are kept, the skipped ones fill the batch
in rank order, so the strategy contract (exactly ``min(n, len(pool))`` distinct
ids, non-increasing scores) still holds.

This module is the numpy core (:func:`unique_prefix`, :func:`fill_positions`);
the pool-level API lives in :mod:`al_loop.strategies.base` (the registry wraps
strategies, and base may not import back from here):

- :func:`~al_loop.strategies.base.dedupe_selection`: the filter over a given
  :class:`~al_loop.types.Selection` (e.g. ``strategy.select(pool, len(pool), rng)``).
- :class:`~al_loop.strategies.base.DedupedStrategy`: wraps any strategy; what
  ``make_strategy(name, task, dedupe_threshold=0.95)`` returns. It asks the
  inner strategy for a candidate prefix of ``1.5 n + 8`` items and, while that
  prefix holds too few distinct ones, for four times as many (up to the
  whole pool), each time with the same ``rng`` state.
- Cost: each candidate row is normalised once; candidates are compared in
  chunks (``chunk x (chosen + labelled)`` and ``chunk x chunk`` float32
  products), so a ``100k x 384`` pool with 10k labelled items and a batch of
  100 takes milliseconds, and memory stays at a few chunks.

Cosine similarities are computed in float32 and compared with a ``1e-6``
allowance for rounding (``threshold=1.0`` therefore removes exact duplicates).
A zero embedding has similarity 0 to everything (it is never a duplicate).
Without pool embeddings nothing is filtered (exact-duplicate detection would
need the texts).
"""

from __future__ import annotations

import numpy as np

from al_loop.errors import ConfigError

DEFAULT_DEDUPE_THRESHOLD = 0.95
"""Cosine similarity from which two texts count as near-duplicates."""

_ROUNDING = 1e-6
_CHUNK = 1024
_LABELLED_CHUNK = 8192


def check_dedupe_threshold(threshold: float | None) -> float | None:
    """``None`` for off (``None`` or 0), else the threshold as a float; :class:`ConfigError` outside ``(0, 1]``."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.floating | np.integer):
        raise ConfigError(f"the near-duplicate threshold must be a number in (0, 1] or 0/None (off), got {threshold!r}")
    value = float(threshold)
    if value == 0.0:
        return None
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"the near-duplicate threshold must be a cosine similarity in (0, 1] or 0 (off), got {value}")
    return value


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (zero rows stay zero)."""
    v = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def unique_prefix(
    embeddings: np.ndarray,
    order: np.ndarray,
    n: int,
    threshold: float,
    labelled: np.ndarray | None = None,
) -> np.ndarray:
    """Positions in ``order`` that the greedy walk keeps: at most ``n``, ascending.

    ``order`` holds row indices of ``embeddings`` in rank order. A candidate is
    kept unless its cosine similarity to a kept one, or to a row of
    ``labelled``, is ``>= threshold``; the walk stops once ``n`` are kept.
    """
    rows = np.asarray(order, dtype=np.intp)
    total, want = len(rows), min(int(n), len(rows))
    kept: list[int] = []
    if want <= 0:
        return np.zeros(0, dtype=np.intp)
    limit = np.float32(threshold - _ROUNDING)
    dim = np.shape(embeddings)[1]
    chosen = np.empty((want, dim), dtype=np.float32)
    lab = None
    if labelled is not None and len(labelled):
        lab = _unit_rows(labelled)
    pos = 0
    while pos < total and len(kept) < want:
        size = min(_CHUNK, max(64, 2 * (want - len(kept))), total - pos)
        V = _unit_rows(np.asarray(embeddings)[rows[pos : pos + size]])
        ok = np.ones(size, dtype=bool)
        if lab is not None:
            for start in range(0, len(lab), _LABELLED_CHUNK):
                ok &= (V @ lab[start : start + _LABELLED_CHUNK].T).max(axis=1) < limit
        if kept:
            ok &= (V @ chosen[: len(kept)].T).max(axis=1) < limit
        within = V @ V.T
        for j in np.flatnonzero(ok):
            if not ok[j]:
                continue  # a near-duplicate of an earlier candidate of this chunk
            chosen[len(kept)] = V[j]
            kept.append(pos + int(j))
            if len(kept) == want:
                break
            ok[j + 1 :] &= within[j, j + 1 :] < limit
        pos += size
    return np.asarray(kept, dtype=np.intp)


def fill_positions(kept: np.ndarray, total: int, n: int) -> np.ndarray:
    """``kept`` plus, if it has fewer than ``min(n, total)``, the earliest other positions; ascending."""
    want = min(int(n), total)
    if len(kept) >= want:
        return kept[:want]
    mask = np.zeros(total, dtype=bool)
    mask[kept] = True
    extra = np.flatnonzero(~mask)[: want - len(kept)]
    return np.sort(np.concatenate([kept, extra]))
