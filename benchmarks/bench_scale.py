"""Pool scoring at scale (issue 11, items 2-3, the scoring half): peak memory of a round's scoring phase vs pool size.

Not a test, not in CI. For each ``--sizes`` pool (short texts resampled from TREC questions in
``../shared/data/trec``, made unique by a suffix) a fresh SQLite store gets the pool (import rate
printed), then a **fresh subprocess** runs the round's scoring phase exactly as ``RoundService`` does
(``PoolSnapshot`` over ``unlabelled_id_chunks``, ``score_pool`` with ids and texts read back from the
store chunk by chunk) and reports its wall time and memory: ``rss_before_mib`` (the resident set just
before scoring), ``peak_before_mib`` (the high-water mark then: imports, opening the store) and
``peak_rss_mib``, the scoring phase's own high-water mark (VmHWM, reset before scoring).

The model is a synthetic stand-in with MiniLM's output shapes (384-d float32 embeddings, softmax over
6 labels, deterministic per text, cheap): what is measured is the pipeline's memory, not a
transformer's. ``--one-shot`` also runs the previous path (``rank_pool`` over the whole pool in one
call) for comparison.

    .venv/bin/python benchmarks/bench_scale.py --sizes 100000 1000000
    .venv/bin/python benchmarks/bench_scale.py --sizes 20000 --one-shot --strategy least_confidence
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
DIM = 384
_PRIMES = np.array([2 * k + 7 for k in range(DIM)], dtype=np.uint64)


@dataclass
class SyntheticOutput:
    embeddings: np.ndarray
    probs: np.ndarray
    token_probs: None
    predicted: list[tuple[str, ...]]


class SyntheticModel:
    """MiniLM-shaped outputs, deterministic per text (crc32-seeded), cheap to compute."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema

    def predict(self, texts: Sequence[str], *, embeddings: bool = True) -> SyntheticOutput:
        seeds = np.array([zlib.crc32(t.encode()) for t in texts], dtype=np.uint64)
        emb = ((seeds[:, None] * _PRIMES[None, :]) % np.uint64(1009)).astype(np.float32) / 1009.0 - 0.5
        logits = np.stack([((seeds * (k + 3)) % 997).astype(np.float64) / 150.0 for k in range(len(LABELS))], axis=1)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
        return SyntheticOutput(emb, probs, None, [(LABELS[int(i)],) for i in probs.argmax(axis=1)])


def _sentences() -> list[str]:
    data = Path(os.environ.get("AL_LOOP_SHARED_DATA", REPO.parent / "shared" / "data")) / "trec" / "TREC.train"
    lines = data.read_text(encoding="latin-1").splitlines()
    return [ln.split(" ", 1)[1] for ln in lines if " " in ln]


def build_store(path: Path, n: int) -> dict[str, float]:
    from al_loop.config import LoopConfig
    from al_loop.data.schema import LabelSchema
    from al_loop.store import Store
    from al_loop.types import Example, ItemId

    store = Store(f"sqlite:///{path}")
    project = store.create_project("scale", LabelSchema.build("classification", LABELS), loop=LoopConfig())
    sentences = _sentences()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    batch = 50_000
    for start in range(0, n, batch):
        picks = rng.integers(0, len(sentences), min(batch, n - start))
        store.add_items(project.id, [Example(ItemId(f"t{start + i}"), f"{sentences[int(j)]} (#{start + i})")
                                     for i, j in enumerate(picks)])
    seconds = time.perf_counter() - t0
    store.dispose()
    return {"import_s": round(seconds, 1), "import_per_s": round(n / seconds)}


def _rss_now_mib() -> float:
    """The process's resident set now (Linux ``/proc/self/statm``), MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """VmHWM (the resident high-water mark since the last reset), MiB; ru_maxrss where /proc is missing."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> float:
    """Return the high-water mark so far and reset it to the current RSS (Linux ``clear_refs`` 5)."""
    before = _peak_mib()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return before


def score_once(db: Path, strategy_name: str, chunk: int, one_shot: bool, batch: int) -> dict[str, Any]:
    """In this (fresh) process: the round's scoring phase; returns seconds and RSS figures (MiB)."""
    from al_loop.config import LoopConfig
    from al_loop.rounds.pool_phase import score_pool
    from al_loop.rounds.pool_round import PoolSnapshot
    from al_loop.rounds.scoring import rank_pool
    from al_loop.store import Store
    from al_loop.store.repository import unlabelled_id_chunks
    from al_loop.strategies import DedupedStrategy, make_strategy

    store = Store(f"sqlite:///{db}")
    project = store.list_projects()[0]
    model = SyntheticModel(project.schema)
    strategy: Any = make_strategy(strategy_name, "classification")
    strategy = DedupedStrategy(strategy, 0.95)
    model.predict(["warm up"])
    from al_loop.strategies import modal_adapter

    modal_adapter.classification_uncertainty(np.full((1, 2), 0.5))  # modAL (and the torch it imports) loaded
    rss0 = _rss_now_mib()
    peak0 = _reset_peak()  # the high-water mark so far (opening the store, imports), then reset to now
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def texts_of(ids: Sequence[Any]) -> list[str]:
        return [it.text for it in store.get_items(project.id, ids)]

    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng([13, 1])
        if one_shot:
            ids = store.unlabelled_item_ids(project.id)
            scored = rank_pool(model, strategy, project.schema, ids, texts_of(ids), [], batch, rng, timings=timings)
        else:
            snapshot = PoolSnapshot.write(folder, unlabelled_id_chunks(store, project.id, chunk))
            scored = score_pool(model, strategy, project.schema, LoopConfig(score_chunk_size=chunk), snapshot,
                                Path(folder), batch, [], rng, texts_of, timings=timings)
    seconds = time.perf_counter() - t0
    peak = _peak_mib()
    return {"seconds": round(seconds, 1), "rss_before_mib": round(rss0), "peak_before_mib": round(peak0),
            "peak_rss_mib": round(peak), "growth_mib": round(peak - rss0), "stored_rows": len(scored),
            "selected": [s.item_id for s in scored if s.selected][:5]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--strategy", default="least_confidence")
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--one-shot", action="store_true", help="also measure the one-call path (rank_pool)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        db, strategy, one_shot = args.child
        print(json.dumps(score_once(Path(db), strategy, args.chunk, one_shot == "1", args.batch)))
        return 0
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "scale.sqlite"
            row: dict[str, Any] = {"pool": n, "strategy": args.strategy, "chunk": args.chunk, **build_store(db, n)}
            for mode in (["0", "1"] if args.one_shot else ["0"]):
                out = subprocess.run([sys.executable, __file__, "--chunk", str(args.chunk), "--batch", str(args.batch),
                                      "--child", str(db), args.strategy, mode],
                                     capture_output=True, text=True, check=True)
                row["one_shot" if mode == "1" else "chunked"] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            results.append(row)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
