"""Chunked pool scoring: predict a pool chunk by chunk and keep only what selection needs.

Two modes, chosen from the strategy by :func:`plan_scoring`:

- ``stream`` (``random``, ``least_confidence``, ``margin``, ``entropy``, the NER sequence scores,
  with or without the near-duplicate filter): a :class:`~al_loop.strategies.topk.TopK` of the
  ``candidates`` most informative items by ``(score desc, shuffle place asc)`` -- exactly
  ``top_n``'s order -- with their predictions and, for the filter, their duplicate-space embedding rows.
- ``full`` (``ranked_batch``, ``information_density``, ``badge``): these look at every pool
  embedding, so embeddings (and the base uncertainty, the NER non-empty flags, badge's
  probabilities) are appended chunk by chunk to raw files (:class:`Spool`) and read back as
  ``np.memmap`` for selection.

Both modes also keep the ``stored`` least confident items (``(confidence asc, pool position asc)``,
today's order of the unselected rows) with their predictions: that is what the round stores.

A shard (:func:`score_shard`) scores one contiguous range of pool positions; shard results merge
exactly (:func:`merge_results`) because both orders are total. Nothing here imports the store,
Celery or torch: the caller passes the model, the chunks and the keys.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from al_loop.data.schema import LabelSchema
from al_loop.rounds.scoring import item_confidence, prediction_payload
from al_loop.strategies import (
    BadgeStrategy,
    DedupedStrategy,
    InformationDensityStrategy,
    PoolView,
    RandomStrategy,
    RankedBatchStrategy,
    Strategy,
    UncertaintyStrategy,
    measure_scores,
)
from al_loop.strategies.topk import TopK
from al_loop.types import ItemId, TaskKind

__all__ = [
    "SPOOL_NAMES",
    "ScoringSpec",
    "ShardResult",
    "Spool",
    "dedupe_attempts",
    "load_result",
    "merge_results",
    "open_spools",
    "plan_scoring",
    "predict_rows",
    "save_result",
    "score_shard",
]

Chunk = tuple[Sequence[ItemId], Sequence[str]]
SPOOL_NAMES = ("embeddings", "measure", "nonempty", "probs", "space")
BaseEmbed = Callable[[Sequence[str]], "np.ndarray | None"]


@dataclass(frozen=True)
class ScoringSpec:
    """What every chunk keeps (JSON-able: it travels to shard workers)."""

    task: str
    multi_label: bool
    mode: str  # "stream" | "full"
    measure: str | None = None  # stream: the uncertainty measure (None: random, every score 0)
    base_measure: str | None = None  # full: the measure behind ranked batch / information density
    keep_probs: bool = False  # full: badge needs the probabilities
    dedupe: bool = False  # keep duplicate-space embeddings (stream: of the candidates)
    base_embed: bool = False  # judge near-duplicates on frozen base-model embeddings
    candidates: int = 0  # stream: how many top-scored items are kept
    stored: int = 0  # how many least-confident items are kept (the stored rows)
    chunk_size: int = 1024

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoringSpec:
        return cls(**data)


def dedupe_attempts(k: int) -> int:
    """First candidate prefix :class:`~al_loop.strategies.DedupedStrategy` tries for a batch of ``k``."""
    return k + k // 2 + 8


def plan_scoring(
    strategy: Strategy, schema: LabelSchema, n: int, *, stored: int, chunk_size: int, base_embed: bool
) -> ScoringSpec | None:
    """The scoring spec for ``strategy`` selecting ``n``, or None for a strategy this module does not know
    (the caller then scores the pool in one call, as before)."""
    dedupe = isinstance(strategy, DedupedStrategy)
    inner = strategy.inner if isinstance(strategy, DedupedStrategy) else strategy
    common: dict[str, Any] = {
        "task": schema.task.value,
        "multi_label": schema.multi_label,
        "dedupe": dedupe,
        "base_embed": dedupe and base_embed,
        "stored": max(int(stored), int(n)),
        "chunk_size": int(chunk_size),
    }
    if isinstance(inner, UncertaintyStrategy | RandomStrategy):
        measure = inner.measure if isinstance(inner, UncertaintyStrategy) else None
        # the filter walks prefixes of 1.5 n + 8, then 4x, 16x that: keep enough for three attempts
        candidates = 16 * dedupe_attempts(n) if dedupe else n
        return ScoringSpec(mode="stream", measure=measure, candidates=candidates, **common)
    if isinstance(inner, RankedBatchStrategy | InformationDensityStrategy):
        return ScoringSpec(mode="full", base_measure=inner.base, **common)
    if isinstance(inner, BadgeStrategy):
        return ScoringSpec(mode="full", keep_probs=True, **common)
    return None


class Spool:
    """Row-aligned arrays appended chunk by chunk to raw files in ``folder`` (no memory map while writing:
    written pages never count against the process)."""

    def __init__(self, folder: str | Path, shard: int | str) -> None:
        self.folder = Path(folder)
        self.shard = shard  # part of the file names: a shard run's own token, so a duplicate run never mixes in
        self.meta: dict[str, dict[str, Any]] = {}

    def write(self, name: str, array: np.ndarray) -> None:
        arr = np.ascontiguousarray(array)
        width = 0 if arr.ndim == 1 else int(arr.shape[1])
        path = self.folder / f"{name}-{self.shard}.bin"
        info = self.meta.setdefault(name, {"path": str(path), "dtype": arr.dtype.str, "width": width, "rows": 0})
        if info["dtype"] != arr.dtype.str or info["width"] != width:
            raise ValueError(f"spool {name!r}: chunk {arr.dtype} x {width} after {info['dtype']} x {info['width']}")
        with open(path, "ab") as fh:
            fh.write(arr.tobytes())
        info["rows"] += int(arr.shape[0])


def open_spools(metas: Sequence[dict[str, dict[str, Any]]], folder: str | Path) -> dict[str, np.ndarray]:
    """Read-only memory maps of the shards' spools, concatenated in shard order (one file per name)."""
    out: dict[str, np.ndarray] = {}
    names = sorted({name for meta in metas for name in meta})
    for name in names:
        parts = [meta[name] for meta in metas if name in meta]
        rows = sum(int(p["rows"]) for p in parts)
        dtype, width = np.dtype(parts[0]["dtype"]), int(parts[0]["width"])
        if len(parts) == 1:
            path = Path(parts[0]["path"])
        else:
            path = Path(folder) / f"{name}.bin"
            with open(path, "wb") as dst:
                for p in parts:
                    with open(p["path"], "rb") as src:
                        shutil.copyfileobj(src, dst, 1 << 22)
        shape = (rows,) if width == 0 else (rows, width)
        if rows == 0:
            out[name] = np.zeros(shape, dtype=dtype)
        else:
            out[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape)
    return out


@dataclass
class ShardResult:
    """What one shard (or the merge of all) keeps: counts, the two top-k's, the spool descriptions."""

    n: int
    top: TopK | None
    low: TopK
    spools: list[dict[str, dict[str, Any]]]
    used_base: bool = False  # near-duplicates judged on frozen base embeddings (else the model's)


def predict_rows(model: Any, spec: ScoringSpec, ids: Sequence[ItemId], texts: Sequence[str]) -> list[Any]:
    """Stored rows ``(id, confidence, prediction)`` of a few items, predicted now."""
    rows = _chunk_outputs(model, ScoringSpec(spec.task, spec.multi_label, spec.mode), ids, texts, None)[1]
    return _with_payloads(rows, TaskKind(spec.task))


def _with_payloads(rows: list[Any], task: TaskKind) -> list[Any]:
    """``(id, confidence, model prediction)`` -> ``(id, confidence, stored prediction payload)``: made for the
    rows a shard keeps only, not for every pool item."""
    return [(r[0], r[1], prediction_payload(task, r[2], r[1])) for r in rows]


def _chunk_outputs(
    model: Any, spec: ScoringSpec, ids: Sequence[ItemId], texts: Sequence[str], base_embed: BaseEmbed | None
) -> tuple[Any, list[tuple[str, float, dict[str, Any]]], np.ndarray | None]:
    """Model outputs, rows ``(id, confidence, model prediction)`` and the frozen base embeddings (or None)."""
    task = TaskKind(spec.task)
    out = model.predict(list(texts), embeddings=True)
    conf = [item_confidence(out, i, task, spec.multi_label) for i in range(len(ids))]
    rows = [(str(ids[i]), conf[i], out.predicted[i]) for i in range(len(ids))]
    base = base_embed(texts) if (spec.dedupe and spec.base_embed and base_embed is not None) else None
    return out, rows, None if base is None else np.asarray(base)


def score_shard(
    model: Any,
    spec: ScoringSpec,
    chunks: Iterable[Chunk],
    *,
    start: int = 0,
    keys: np.ndarray | None = None,
    spool: Spool | None = None,
    base_embed: BaseEmbed | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> ShardResult:
    """Score the chunks (pool positions ``start``, ``start + 1``, ...; each chunk at most ``spec.chunk_size``).

    ``keys``: stream mode, each position's place in the selection shuffle (row-aligned with the
    chunks). ``spool``: full mode, where the embeddings go. ``on_chunk(rows_done)`` after each chunk.
    """
    task = TaskKind(spec.task)
    top = TopK(spec.candidates) if spec.mode == "stream" else None
    low = TopK(spec.stored)
    # stream mode embeds only the kept candidates with the base model, once, after the last chunk
    late = base_embed if (top is not None and spec.dedupe and spec.base_embed) else None
    pos = start
    done = 0
    used_base = False
    for ids, texts in chunks:
        if not len(ids):
            continue
        out, rows, base = _chunk_outputs(model, spec, ids, texts, None if late is not None else base_embed)
        used_base = base is not None
        space = (np.asarray(out.embeddings) if base is None else base) if spec.dedupe else None
        positions = np.arange(pos, pos + len(ids), dtype=np.int64)
        conf = np.array([r[1] for r in rows], dtype=np.float64)
        low.push(-conf, positions, rows)
        view = PoolView(
            item_ids=tuple(ids), probs=out.probs, token_probs=out.token_probs, multi_label=spec.multi_label
        )
        if top is not None:
            if keys is None:
                raise ValueError("stream scoring needs the shuffle keys")
            values = measure_scores(view, spec.measure, task) if spec.measure else np.zeros(len(ids))
            kept = rows if late is None else [(*row, text) for row, text in zip(rows, texts, strict=True)]
            top.push(values, np.asarray(keys[pos - start : pos - start + len(ids)]), kept, space)
        else:
            if spool is None:
                raise ValueError("full scoring needs a spool")
            spool.write("embeddings", np.asarray(out.embeddings))
            if spec.base_measure:
                spool.write("measure", measure_scores(view, spec.base_measure, task))
            if task is TaskKind.NER:
                spool.write("nonempty", view.nonempty_mask().astype(np.uint8))
            if spec.keep_probs:
                spool.write("probs", np.asarray(out.probs, dtype=np.float64))
            if base is not None:
                spool.write("space", base)
        pos += len(ids)
        done += len(ids)
        if on_chunk is not None:
            on_chunk(done)
    if top is not None and late is not None:
        used_base = _embed_candidates(top, late)
    low.rows = _with_payloads(low.rows, task)
    if top is not None:
        top.rows = _with_payloads(top.rows, task)
    return ShardResult(n=done, top=top, low=low, spools=[spool.meta] if spool is not None else [], used_base=used_base)


def _embed_candidates(top: TopK, base_embed: BaseEmbed) -> bool:
    """Replace the kept candidates' model embeddings by their frozen base-model embeddings (the rows carry
    their texts until now; the texts are dropped). False, keeping the model's, when ``base_embed`` gives None.

    Only the candidates are embedded (``16 (1.5 n + 8)`` at most), not every pool text: the base model's
    pass over the pool used to cost as much as the scoring itself on a pool the feature cache did not hold.
    """
    texts = [row[3] for row in top.rows]
    top.rows = [row[:3] for row in top.rows]
    if not texts:
        return False
    base = base_embed(texts)
    if base is None:
        return False
    top.matrix = np.asarray(base)
    return True


def merge_results(results: Sequence[ShardResult], spec: ScoringSpec) -> ShardResult:
    """The exact merge of shard results given in shard (pool position) order."""
    top = TopK(spec.candidates) if spec.mode == "stream" else None
    low = TopK(spec.stored)
    spools: list[dict[str, dict[str, Any]]] = []
    for r in results:
        if top is not None and r.top is not None:
            top.merge(r.top)
        low.merge(r.low)
        spools.extend(r.spools)
    used = any(r.used_base for r in results)
    return ShardResult(n=sum(r.n for r in results), top=top, low=low, spools=spools, used_base=used)


# ---------------------------------------------------------------- shard results on disk (no pickle)


def _dump_topk(t: TopK, folder: Path, name: str) -> dict[str, Any]:
    arrays: dict[str, Any] = {"primary": t.primary, "key": t.key}
    if t.matrix is not None:
        arrays["matrix"] = t.matrix
    np.savez(folder / f"{name}.npz", **arrays)
    (folder / f"{name}.json").write_text(json.dumps([list(r) for r in t.rows]))
    return {"capacity": t.capacity, "seen": t.seen}


def _load_topk(folder: Path, name: str, info: dict[str, Any]) -> TopK:
    t = TopK(info["capacity"])
    with np.load(folder / f"{name}.npz", allow_pickle=False) as data:
        t.primary, t.key = data["primary"], data["key"]
        t.matrix = data["matrix"] if "matrix" in data.files else None
    t.rows = [(r[0], float(r[1]), r[2]) for r in json.loads((folder / f"{name}.json").read_text())]
    t.seen = int(info["seen"])
    return t


def save_result(result: ShardResult, folder: str | Path) -> Path:
    """Write a shard result atomically (a temporary folder renamed into place): a redelivered shard
    that finds it done need not score again. Returns the folder."""
    target = Path(folder)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    meta: dict[str, Any] = {"n": result.n, "spools": result.spools, "used_base": result.used_base,
                            "low": _dump_topk(result.low, tmp, "low")}
    if result.top is not None:
        meta["top"] = _dump_topk(result.top, tmp, "top")
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, target)  # the folder appears complete or not at all
    except OSError:
        if not (target / "meta.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # a duplicate run of this shard finished first: same result
    return target


def load_result(folder: str | Path) -> ShardResult:
    path = Path(folder)
    meta = json.loads((path / "meta.json").read_text())
    top = _load_topk(path, "top", meta["top"]) if "top" in meta else None
    return ShardResult(n=int(meta["n"]), top=top, low=_load_topk(path, "low", meta["low"]), spools=meta["spools"],
                       used_base=bool(meta["used_base"]))
