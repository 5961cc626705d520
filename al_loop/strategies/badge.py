"""BADGE: batch active learning by diverse gradient embeddings (Ash et al., ICLR 2020), pure numpy.

The gradient embedding of item ``i`` is the gradient of the loss at the
model's own hypothesised label with respect to the weights of a linear head
on the features ``h_i``: ``g_i = a_i ⊗ h_i`` (flattened, ``k x d`` values) with

- single-label (softmax + cross-entropy): ``a_i = p_i - onehot(argmax p_i)``;
- multi-label (independent sigmoids + binary cross-entropy, the hypothesised
  label set is ``{j: p_ij >= 0.5}``): ``a_i = p_i - [p_i >= 0.5]``.

``||g_i||`` grows with the model's uncertainty (``a_i``) and the feature scale;
k-means++ seeding over the ``g_i`` then picks items that are both uncertain and
different from each other. ``h_i`` here is the pool embedding (the cached
mean-pooled encoder output, the input of a linear classification head).

The ``g_i`` are never materialised (a 100k pool with d=384, k=50 would need
15 GB): every distance k-means++ needs comes from the factorisation
``||g_i - g_j||² = ||a_i||²||h_i||² + ||a_j||²||h_j||² - 2 (a_i·a_j)(h_i·h_j)``,
one ``(n, k) @ (k,)`` and one ``(n, d) @ (d,)`` product per chosen item, so a
batch of ``b`` costs ``O(b n (k + d))`` time and ``O(n (k + d))`` memory.
"""

from __future__ import annotations

import numpy as np

from al_loop.strategies.modal_adapter import top_n

_CANCEL = 1e-5
"""Squared distances below this fraction of ``||g_i||² + ||g_j||²`` are set to 0:
they are float rounding of the factorised formula (exact duplicates), not distance."""


def gradient_factors(probs: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """The ``(n, k)`` factors ``a_i`` of the gradient embeddings ``g_i = a_i ⊗ h_i`` (see the module docstring)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be (n, k), got shape {p.shape}")
    if multi_label:
        return p - (p >= 0.5)
    a = p.copy()
    if a.shape[0] and a.shape[1]:
        a[np.arange(a.shape[0]), np.argmax(p, axis=1)] -= 1.0
    return a


def kmeans_pp(factors: np.ndarray, features: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding over the gradient embeddings ``factors[i] ⊗ features[i]``: ``min(n, len)`` distinct rows.

    As in the authors' code, the first row is the one with the largest gradient
    norm (ties at random through ``rng``); each next row is drawn with
    probability proportional to its squared distance to the nearest row chosen
    so far (D² sampling, one ``rng`` draw per row). When every remaining row
    coincides with a chosen one (all distances 0), the next row is uniform
    among the remaining ones. The result is in the order drawn.
    """
    A = np.asarray(factors, dtype=np.float64)
    H = np.asarray(features)
    if H.dtype not in (np.float32, np.float64):
        H = H.astype(np.float64)
    m = A.shape[0]
    if A.ndim != 2 or H.ndim != 2 or H.shape[0] != m:
        raise ValueError("factors must be (n, k) and features (n, d) with the same n")
    k = min(int(n), m)
    out = np.empty(max(k, 0), dtype=np.intp)
    if k <= 0:
        return out
    a2 = np.einsum("ij,ij->i", A, A)
    h2 = np.einsum("ij,ij->i", H, H, dtype=np.float64)
    norm2 = a2 * h2
    available = np.ones(m, dtype=bool)
    d2 = np.full(m, np.inf)

    first = int(top_n(norm2, 1, rng)[0])
    for t in range(k):
        if t == 0:
            c = first
        else:
            weights = np.where(available, d2, 0.0)
            cumulative = np.cumsum(weights)
            total = float(cumulative[-1])
            if total > 0.0 and np.isfinite(total):
                c = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
                if c >= m or not available[c]:  # r rounded up to the total: take the last positive weight
                    c = int(np.flatnonzero(weights > 0)[-1])
            else:
                left = np.flatnonzero(available)
                c = int(left[int(rng.integers(len(left)))])
        out[t] = c
        available[c] = False
        if t == k - 1:
            break
        dot = (A @ A[c]) * np.asarray(H @ H[c], dtype=np.float64)
        dist = norm2 + norm2[c] - 2.0 * dot
        dist[dist <= _CANCEL * (norm2 + norm2[c])] = 0.0
        np.minimum(d2, dist, out=d2)
    return out
