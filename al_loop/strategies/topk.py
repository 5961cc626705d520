"""Streaming top-k over chunks, with a total order that reproduces :func:`~al_loop.strategies.modal_adapter.top_n`.

``top_n(scores, n, rng)`` shuffles the pool with ``perm = rng.permutation(N)`` and stable-sorts the
shuffled scores in descending order, so item ``i`` precedes item ``j`` iff ``score_i > score_j`` or
the scores are equal and ``inv[i] < inv[j]``, where ``inv`` is the inverse permutation (the item's
place in the shuffle). That is a total order on ``(-score, inv)``: the top ``k`` of a pool is the
top ``k`` of the union of the top ``k`` of its parts, so a pool can be scored chunk by chunk (or in
shards on several workers) keeping ``k`` rows, and merged exactly (:meth:`TopK.merge`).

:class:`TopK` keeps, besides the two sort keys, any per-row data the caller needs later (item ids,
predictions, embedding rows): ``rows`` (a list of arbitrary objects) and ``matrix`` (an optional
2-D array), both carried through every truncation. Nothing here draws random numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["TopK", "inverse_permutation", "order_of"]


def inverse_permutation(perm: np.ndarray) -> np.ndarray:
    """``inv`` with ``inv[perm[j]] = j`` (int64): each item's place in the shuffle."""
    p = np.asarray(perm, dtype=np.int64)
    inv = np.empty_like(p)
    inv[p] = np.arange(len(p), dtype=np.int64)
    return inv


def order_of(primary: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Indices sorting rows by ``primary`` descending, then ``key`` ascending (keys are unique)."""
    return np.lexsort((np.asarray(key, dtype=np.int64), -np.asarray(primary, dtype=np.float64)))


class TopK:
    """The ``capacity`` best rows seen so far by ``(primary desc, key asc)``; keys must be unique.

    ``push(primary, key, rows, matrix)`` adds a chunk; ``merge(other)`` adds another TopK (a
    shard's); :meth:`sorted` returns the kept rows best first. ``capacity=None`` keeps everything.
    """

    def __init__(self, capacity: int | None) -> None:
        if capacity is not None and capacity < 0:
            raise ValueError("capacity must be >= 0 or None")
        self.capacity = capacity
        self.primary: np.ndarray = np.zeros(0, dtype=np.float64)
        self.key: np.ndarray = np.zeros(0, dtype=np.int64)
        self.rows: list[Any] = []
        self.matrix: np.ndarray | None = None
        self.seen = 0

    def __len__(self) -> int:
        return len(self.key)

    def push(
        self,
        primary: np.ndarray,
        key: np.ndarray,
        rows: Sequence[Any] | None = None,
        matrix: np.ndarray | None = None,
    ) -> None:
        """Add rows (``primary``, ``key`` and, row-aligned, ``rows`` / ``matrix``) and keep the best ``capacity``."""
        p = np.asarray(primary, dtype=np.float64).reshape(-1)
        k = np.asarray(key, dtype=np.int64).reshape(-1)
        if len(p) != len(k) or (rows is not None and len(rows) != len(k)):
            raise ValueError("primary, key and rows must have the same length")
        if np.isnan(p).any():
            raise ValueError("scores contain NaN")
        if matrix is not None and (np.ndim(matrix) != 2 or len(matrix) != len(k)):
            raise ValueError("matrix must be 2-D with one row per key")
        self.seen += len(k)
        if len(k) == 0:
            return
        if self.matrix is None and len(self) == 0 and matrix is not None:
            self.matrix = np.zeros((0, np.shape(matrix)[1]), dtype=np.asarray(matrix).dtype)
        if (matrix is None) != (self.matrix is None):
            raise ValueError("every chunk must come with a matrix, or none")
        # pre-cut the chunk to its own best ``capacity`` rows before concatenating
        if self.capacity is not None and len(k) > self.capacity:
            cut = order_of(p, k)[: self.capacity]
            p, k = p[cut], k[cut]
            rows = [rows[int(i)] for i in cut] if rows is not None else None
            matrix = np.asarray(matrix)[cut] if matrix is not None else None
        self.primary = np.concatenate([self.primary, p])
        self.key = np.concatenate([self.key, k])
        self.rows.extend(rows if rows is not None else [None] * len(k))
        if matrix is not None and self.matrix is not None:
            self.matrix = np.concatenate([self.matrix, np.asarray(matrix, dtype=self.matrix.dtype)])
        if self.capacity is not None and len(self) > self.capacity:
            self._keep(order_of(self.primary, self.key)[: self.capacity])

    def merge(self, other: TopK) -> None:
        """Fold ``other`` (e.g. another shard's TopK) into this one."""
        seen = self.seen
        self.push(other.primary, other.key, other.rows, other.matrix)
        self.seen = seen + other.seen

    def _keep(self, idx: np.ndarray) -> None:
        self.primary, self.key = self.primary[idx], self.key[idx]
        self.rows = [self.rows[int(i)] for i in idx]
        if self.matrix is not None:
            self.matrix = self.matrix[idx]

    def sorted(self) -> TopK:
        """A copy of the kept rows, best first."""
        out = TopK(self.capacity)
        out.seen = self.seen
        idx = order_of(self.primary, self.key)
        out.primary, out.key = self.primary[idx], self.key[idx]
        out.rows = [self.rows[int(i)] for i in idx]
        out.matrix = None if self.matrix is None else self.matrix[idx]
        return out
