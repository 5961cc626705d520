"""Scale benchmark (issue 11, item 5): imports, rounds, scoring throughput and fan-out on this machine.

Not a test, not in CI (``tests/test_benchmarks.py`` runs it at a tiny size). One command, parts selectable
with ``--part`` (repeatable; default: import, round, throughput, fanout). Texts are synthetic but realistic:
one or two sentences resampled from ``../shared/data`` (SST-2 movie-review sentences and TREC questions)
plus a short ``(ref N)`` tail that makes each unique. Every measured figure is printed as one JSON line
(``{"part": ..., ...}``) and the whole run as one JSON document at the end (and in ``--out``). Medians over
``--repeats`` where a part repeats. The parts:

* ``import``: ``--import-sizes`` texts added to a fresh SQLite store by ``Store.add_item_batch`` (the large-import
  path of the import job) in batches of ``--import-batch`` (10,000), generated batch by batch, in a fresh
  process. Columns: ``items``, ``import_s``, ``items_per_s``, ``rss_before_mib`` (the process before
  importing), ``peak_rss_mib`` (its high-water mark while importing, VmHWM) and ``db_mib``. This is the
  store's side of an import; ``benchmarks/bench_import.py`` measures the whole job from a file.
* ``round``: a real round (``RoundService.run_round``, the packaged MiniLM, project defaults, strategy
  ``least_confidence`` with the near-duplicate filter, batch 50) on ``--round-sizes`` pools with
  ``--labels`` TREC questions labelled, in a fresh process. Columns: ``train_s`` (fine-tune or head, with
  the learner comparison ``auto`` makes), ``score_s`` (the pool through the model, merged), ``select_s``,
  ``push_s`` (building the Label Studio prediction payloads of the stored rows, exactly as the push does,
  ``RoundPublisher._predictions``; nothing is sent, Label Studio is not needed), ``other_s`` (snapshot,
  evaluate, publish), ``wall_s``, ``stored_rows``, ``peak_rss_mib`` (the round only).
* ``throughput``: ``--throughput-n`` texts scored by al-loop's path (``TextModel.predict``, project defaults:
  bf16 where the CPU has it natively, length-sorted dynamic padding; ``alloop`` with embeddings as a round
  scores, ``alloop_probs`` without, ``alloop_fp32`` in fp32) against a transformers ``pipeline`` one call per
  text (``pipeline_naive``, on ``--naive-n`` of the texts), the pipeline given the list with
  ``batch_size=32`` (``pipeline_batched``) and fp32 batches of 32 padded to 128 tokens (``fixed_fp32``).
  Columns: ``texts_per_s`` and ``x_naive`` (the rate over the naive pipeline's).
* ``fanout``: a ``--fanout-size`` pool's round scored by one process with 2 torch threads
  (``score_shards: 1``) vs two warm score workers of 1 thread each (``score_shards: 2``, each worker a process
  running ``RoundService.score_shard`` as the ``score`` queue's task does, fed through a pipe instead of
  Redis), each round in a fresh process from the same store copy (training with 2 threads in both, so the
  same model). Columns: ``one_worker_2_threads_s`` and ``two_workers_1_thread_s`` (the round's ``score``
  phase: shards, model loads in the workers, merge), ``ratio`` (two / one; target <= 1.1 on 2 cores),
  ``same_selection`` and ``selection_overlap`` (1- and 2-thread matmuls can differ in the last bits, which
  may reorder near-ties; the exact equality of the merge is tested in ``tests/bridge/test_score_fanout.py``).
* ``memory``: the earlier scoring-phase memory benchmark with a synthetic MiniLM-shaped model (``--sizes``,
  ``--one-shot``): what the chunked pipeline itself holds, without a transformer.

    .venv/bin/python benchmarks/bench_scale.py --out scale.json                       # everything (long)
    .venv/bin/python benchmarks/bench_scale.py --part import --import-sizes 100000 1000000
    .venv/bin/python benchmarks/bench_scale.py --part round --round-sizes 10000 100000 --labels 100
    .venv/bin/python benchmarks/bench_scale.py --part throughput --throughput-n 2000 --naive-n 500
    .venv/bin/python benchmarks/bench_scale.py --part fanout --fanout-size 100000
    .venv/bin/python benchmarks/bench_scale.py --part memory --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
DIM = 384
_PRIMES = np.array([2 * k + 7 for k in range(DIM)], dtype=np.uint64)
PARTS = ("import", "round", "throughput", "fanout", "memory")
DEFAULT_PARTS = ("import", "round", "throughput", "fanout")


def _data_dir() -> Path:
    return Path(os.environ.get("AL_LOOP_SHARED_DATA", REPO.parent / "shared" / "data"))


def _trec() -> list[tuple[str, str]]:
    """TREC training questions and their coarse labels."""
    lines = (_data_dir() / "trec" / "TREC.train").read_text(encoding="latin-1").splitlines()
    return [(ln.split(" ", 1)[1], ln.split(":", 1)[0]) for ln in lines if " " in ln]


def _corpus() -> list[str]:
    """SST-2 sentences and TREC questions: short texts of realistic lengths and vocabulary."""
    sst = (_data_dir() / "sst2" / "stsa.binary.train").read_text(encoding="utf-8", errors="replace").splitlines()
    return [ln.split(" ", 1)[1] for ln in sst if " " in ln] + [q for q, _ in _trec()]


def synthetic_batches(n: int, batch: int, seed: int = 0) -> Iterator[list[tuple[str, str]]]:
    """``n`` unique (id, text) pairs in batches: one sentence, or two (30 %), and a ``(ref N)`` tail."""
    corpus = _corpus()
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        first = rng.integers(0, len(corpus), m)
        second = rng.integers(0, len(corpus), m)
        two = rng.random(m) < 0.3
        yield [(f"t{start + i}", f"{corpus[int(first[i])]}{' ' + corpus[int(second[i])] if two[i] else ''} "
                                 f"(ref {start + i})") for i in range(m)]


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    return [t for b in synthetic_batches(n, max(1, n), seed) for _, t in b]


def _machine() -> dict[str, Any]:
    import torch

    from al_loop.models.loading import cpu_supports_bf16

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "native_bf16": cpu_supports_bf16(),
            "cuda": torch.cuda.is_available(), "torch": torch.__version__}


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


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



# ---------------------------------------------------------------------------- child processes
def _run_child(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run ``spec`` in a fresh interpreter (its own peak RSS, threads, caches) and return its JSON answer."""
    proc = subprocess.run([sys.executable, __file__, "--child-json", json.dumps(spec)], capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec['kind']} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _training(fast: bool) -> Any:
    from al_loop.config import TrainingConfig

    # --fast-train (smoke tests): a few fine-tuning steps instead of the project default's learner comparison
    return TrainingConfig(learner="finetune", target_steps=2, min_epochs=1, max_epochs=1) if fast else TrainingConfig()


def setup_store(db: Path, n: int, labels: int, *, fast_train: bool = False, batch: int = 10_000) -> dict[str, Any]:
    """A project with ``n`` synthetic pool texts and ``labels`` labelled TREC questions (SQLite at ``db``)."""
    from al_loop.config import LoopConfig
    from al_loop.data.schema import LabelSchema
    from al_loop.store import Store
    from al_loop.types import Example, ItemId

    t0 = time.perf_counter()
    store = Store(f"sqlite:///{db}")
    schema = LabelSchema.build("classification", LABELS)
    project = store.create_project("scale", schema, loop=LoopConfig(), training=_training(fast_train))
    add = getattr(store, "add_item_batch", store.add_items)
    for pairs in synthetic_batches(n, batch):
        add(project.id, [Example(ItemId(i), t) for i, t in pairs])
    questions = _trec()
    picks = np.random.default_rng(1).choice(len(questions), size=min(labels, len(questions)), replace=False)
    store.add_items(project.id, [Example(ItemId(f"l{k}"), questions[int(j)][0]) for k, j in enumerate(picks)])
    for k, j in enumerate(picks):
        store.record_label(project.id, ItemId(f"l{k}"), f"bench:{k}", payload={"labels": [questions[int(j)][1]]},
                           source="api")
    store.dispose()
    return {"project_id": project.id, "setup_s": round(time.perf_counter() - t0, 1)}


def import_child(folder: str, n: int, batch: int) -> dict[str, Any]:
    from al_loop.config import LoopConfig
    from al_loop.data.schema import LabelSchema
    from al_loop.store import Store
    from al_loop.types import Example, ItemId

    db = Path(folder) / "import.sqlite"
    store = Store(f"sqlite:///{db}")
    project = store.create_project("import", LabelSchema.build("classification", LABELS), loop=LoopConfig())
    _corpus()  # read once before measuring
    rss0 = _rss_now_mib()
    _reset_peak()
    t0 = time.perf_counter()
    add = getattr(store, "add_item_batch", store.add_items)  # the large-import path (one lookup per batch)
    for pairs in synthetic_batches(n, batch):
        add(project.id, [Example(ItemId(i), t) for i, t in pairs])
    seconds = time.perf_counter() - t0
    peak = _peak_mib()
    store.dispose()
    return {"items": n, "batch": batch, "import_s": round(seconds, 1), "items_per_s": round(n / seconds),
            "rss_before_mib": round(rss0), "peak_rss_mib": round(peak), "db_mib": round(db.stat().st_size / 2**20)}


def _push_payloads(store: Any, project_id: int, round_id: int) -> tuple[float, int]:
    """Build the round's Label Studio prediction payloads as the push does (tasks linked first, untimed)."""
    from annotator_bridge.labelstudio.config import build_label_config, parse_label_config
    from annotator_bridge.loop.publishing import RoundPublisher

    project = store.get_project(project_id)
    scores = store.get_scores(round_id)
    store.set_ext_task_ids(project_id, {str(s.item_id): 1000 + k for k, s in enumerate(scores)})
    cfg = parse_label_config(build_label_config(project.schema))
    t0 = time.perf_counter()
    payloads = RoundPublisher._predictions(SimpleNamespace(store=store), project,  # type: ignore[arg-type]
                                           cfg, store.get_round(round_id))
    return time.perf_counter() - t0, len(payloads)


class PipeShardRunner:
    """A ShardRunner over warm worker processes (``score-worker`` children, one shard at a time each), as Celery
    workers of the ``score`` queue with ``--pool solo`` would run them, fed through pipes instead of Redis."""

    def __init__(self, folder: str, threads: int, workers: int) -> None:
        spec = {"kind": "score-worker", "folder": folder, "threads": threads}
        self.jobs_done = 0
        self.procs = [subprocess.Popen([sys.executable, __file__, "--child-json", json.dumps(spec)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
                      for _ in range(workers)]
        for p in self.procs:  # imported, model code loaded: a started worker
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                self.close()
                raise RuntimeError(f"score worker did not start: {line!r}")

    def __call__(self, jobs: Sequence[Any], progress: Callable[[int], None]) -> list[Any]:
        from al_loop.rounds.pool_scoring import load_result

        todo: queue.Queue[Any] = queue.Queue()
        for job in jobs:
            todo.put(job)
        errors: list[str] = []
        done: list[int] = []

        def serve(p: subprocess.Popen[str]) -> None:
            assert p.stdin is not None and p.stdout is not None
            while True:
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                p.stdin.write(json.dumps(job.to_dict()) + "\n")
                p.stdin.flush()
                answer = json.loads(p.stdout.readline() or '{"error": "worker died"}')
                if "error" in answer:
                    errors.append(answer["error"])
                    return
                done.append(job.shard)

        threads = [threading.Thread(target=serve, args=(p,)) for p in self.procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"score shard failed: {errors[0]}")
        progress(len(done))
        self.jobs_done += len(done)
        return [load_result(job.result_dir) for job in jobs]

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(OSError, ValueError):
                if p.stdin:
                    p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def score_worker_child(folder: str, threads: int) -> None:
    """A score-queue worker: reads shard jobs (JSON lines) and runs ``RoundService.score_shard`` on each."""
    import torch

    torch.set_num_threads(threads)
    from al_loop.models.learners import Learners  # noqa: F401  (a running worker has its model code imported)
    from al_loop.rounds.pool_round import ShardJob
    from al_loop.rounds.service import RoundService
    from al_loop.store import Store

    store = Store(f"sqlite:///{Path(folder) / 'scale.sqlite'}")
    rounds = RoundService(store, None, Path(folder) / "artifacts")
    print("ready", flush=True)
    for line in sys.stdin:
        job = ShardJob.from_dict(json.loads(line))
        t0 = time.perf_counter()
        try:
            result = rounds.score_shard(job)
        except Exception as exc:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            continue
        print(json.dumps({"shard": job.shard, "n": result.n, "seconds": round(time.perf_counter() - t0, 2)}),
              flush=True)


@contextlib.contextmanager
def _rss_samples(path: str | None, every: float = 15.0) -> Iterator[None]:
    """With ``path``: append ``{"t", "rss_mib", "hwm_mib"}`` JSON lines there every ``every`` seconds while the
    block runs (a long round's memory can be watched, and read, before it ends)."""
    if not path:
        yield
        return
    stop = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while True:
            with open(path, "a") as fh:
                fh.write(json.dumps({"t": round(time.perf_counter() - t0, 1), "rss_mib": round(_rss_now_mib()),
                                     "hwm_mib": round(_peak_mib())}) + "\n")
            if stop.wait(every):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def round_child(folder: str, project_id: int, threads: int, shards: int, workers: int,
                rss_log: str | None = None) -> dict[str, Any]:
    """One round on the store in ``folder``; ``shards > 1``: scoring fanned out to ``workers`` score workers."""
    import dataclasses

    import torch

    torch.set_num_threads(threads)
    from al_loop.rounds.service import RoundService
    from al_loop.store import Store

    store = Store(f"sqlite:///{Path(folder) / 'scale.sqlite'}")
    project = store.get_project(project_id)
    store.update_project(project_id, loop=dataclasses.replace(project.loop, score_shards=shards))
    runner = PipeShardRunner(folder, 1, workers) if shards > 1 else None
    try:
        rounds = RoundService(store, None, Path(folder) / "artifacts", shard_runner=runner)
        rnd = rounds.create_round(project_id)
        rss0 = _rss_now_mib()
        _reset_peak()
        t0 = time.perf_counter()
        with _rss_samples(rss_log):
            done = rounds.run_round(rnd.id).round
        wall = time.perf_counter() - t0
        peak = _peak_mib()
    finally:
        if runner is not None:
            runner.close()
    if done.error:
        raise RuntimeError(f"round failed: {done.error}")
    timings = dict(done.timings or {})
    push_s, payloads = _push_payloads(store, project_id, rnd.id)
    scores = store.get_scores(rnd.id)
    main = ("train", "score", "select")
    other = sum(v for k, v in timings.items() if k not in (*main, "total"))
    return {"pool": len(store.unlabelled_item_ids(project_id)), "labels": len(store.labelled_examples(project_id)),
            "torch_threads": threads, "shards": shards, "shard_jobs_on_workers": runner.jobs_done if runner else 0,
            "train_s": timings.get("train"),
            "score_s": timings.get("score"), "select_s": timings.get("select"), "push_s": round(push_s, 3),
            "other_s": round(other, 3), "wall_s": round(wall, 1), "stored_rows": len(scores), "payloads": payloads,
            "rss_before_mib": round(rss0), "peak_rss_mib": round(peak),
            "selected": sorted(str(s.item_id) for s in scores if s.selected), "timings": timings}


# ---------------------------------------------------------------------------- the parts
def part_import(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in args.import_sizes:
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(_run_child({"kind": "import", "folder": tmp, "n": n, "batch": args.import_batch}))
        row = {**runs[-1], "import_s": _median([r["import_s"] for r in runs]),
               "items_per_s": round(_median([r["items_per_s"] for r in runs])),
               "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "repeats": len(runs)}
        rows.append(_emit("import", row))
    return rows


def _prepared(tmp: str, n: int, args: argparse.Namespace) -> int:
    (Path(tmp) / "artifacts").mkdir()
    return int(setup_store(Path(tmp) / "scale.sqlite", n, args.labels, fast_train=args.fast_train)["project_id"])


def part_round(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in args.round_sizes:
        with tempfile.TemporaryDirectory() as tmp:
            pid = _prepared(tmp, n, args)
            runs = []
            for _ in range(args.repeats):  # each repeat on a fresh copy of the prepared store
                with tempfile.TemporaryDirectory() as run_dir:
                    shutil.copy(Path(tmp) / "scale.sqlite", Path(run_dir) / "scale.sqlite")
                    (Path(run_dir) / "artifacts").mkdir()
                    log = f"{args.rss_log}.{n}" if args.rss_log else None
                    runs.append(_run_child({"kind": "round", "folder": run_dir, "project_id": pid,
                                            "threads": args.threads, "shards": 1, "workers": 0,
                                            "rss_log": log}))
        keys = ("train_s", "score_s", "select_s", "push_s", "other_s", "wall_s")
        row = {k: v for k, v in runs[-1].items() if k not in ("selected", "timings")}
        row.update({k: _median([r[k] for r in runs]) for k in keys})
        row["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
        rows.append(_emit("round", {**row, "repeats": len(runs)}))
    return rows


def part_fanout(args: argparse.Namespace) -> list[dict[str, Any]]:
    n = args.fanout_size
    one: list[dict[str, Any]] = []
    two: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        pid = _prepared(tmp, n, args)
        for rep in range(args.repeats):
            # the round's own process trains with 2 threads either way (the same model); alternate who goes first
            order = [(2, 1, 0), (2, 2, 2)] if rep % 2 == 0 else [(2, 2, 2), (2, 1, 0)]
            for threads, shards, workers in order:
                with tempfile.TemporaryDirectory() as run_dir:
                    shutil.copy(Path(tmp) / "scale.sqlite", Path(run_dir) / "scale.sqlite")
                    (Path(run_dir) / "artifacts").mkdir()
                    r = _run_child({"kind": "round", "folder": run_dir, "project_id": pid, "threads": threads,
                                    "shards": shards, "workers": workers})
                (one if shards == 1 else two).append(r)
    a, b = _median([r["score_s"] for r in one]), _median([r["score_s"] for r in two])
    row = {"pool": one[-1]["pool"], "one_worker_2_threads_s": a, "two_workers_1_thread_s": b,
           "ratio": round(b / a, 3) if a else None, "target_ratio": 1.1,
           # 1- and 2-thread matmuls may differ in the last bits, which can reorder near-ties: overlap too
           "same_selection": all(x["selected"] == one[0]["selected"] for x in one + two),
           "selection_overlap": round(len(set(one[0]["selected"]) & set(two[0]["selected"]))
                                      / max(1, len(one[0]["selected"])), 3),
           "train_s_one": _median([r["train_s"] for r in one]), "train_s_two": _median([r["train_s"] for r in two]),
           "shard_jobs_on_workers": two[-1]["shard_jobs_on_workers"],
           "repeats": len(one)}
    return [_emit("fanout", row)]


def linear_flops_per_token(config: Any) -> float:
    """Multiply-adds x 2 of the encoder's linear layers per token (attention projections and the feed-forward):
    the bulk of a short text's cost; attention scores and the embeddings are left out."""
    h, ff = int(config.hidden_size), int(config.intermediate_size)
    return 2.0 * int(config.num_hidden_layers) * (4 * h * h + 2 * h * ff)


def matmul_peak(config: Any, seconds: float = 1.0) -> dict[str, Any]:
    """GFLOP/s of this CPU's torch matmul on the encoder's feed-forward shape (2,048 tokens x hidden @ hidden x
    intermediate), fp32 and bf16: what the linear layers could reach at best."""
    import torch

    h, ff = int(config.hidden_size), int(config.intermediate_size)
    out: dict[str, Any] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, h).to(dtype), torch.randn(h, ff).to(dtype)
        with torch.inference_mode():
            a @ b
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                a @ b
                n += 1
            out[f"{name}_gflops"] = round(n * 2 * 2048 * h * ff / (time.perf_counter() - t0) / 1e9, 1)
    return out


def part_throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from al_loop.config import TrainingConfig
    from al_loop.data.schema import LabelSchema
    from al_loop.models import TextModel, resolve_model_path
    from al_loop.models.frozen import clear_lower_cache

    texts = synthetic_texts(args.throughput_n, seed=7)
    naive_texts = texts[: args.naive_n] if args.naive_n else texts
    schema = LabelSchema.build("classification", LABELS)
    alloop = TextModel.create(schema, config=TrainingConfig())
    alloop_fp32 = TextModel.create(schema, config=TrainingConfig(precision="fp32"))
    path = str(resolve_model_path("default"))
    tok = AutoTokenizer.from_pretrained(path)
    device = alloop.device  # device auto: CUDA when present, for every path alike
    hf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(LABELS)).eval().to(device)
    pipe = pipeline("text-classification", model=hf, tokenizer=tok, device=device, top_k=None)

    def naive() -> int:
        for text in naive_texts:
            pipe(text, truncation=True, max_length=128)
        return len(naive_texts)

    def batched() -> int:
        return len(pipe(texts, batch_size=32, truncation=True, max_length=128))

    def fixed() -> int:
        with torch.inference_mode():
            for b in range(0, len(texts), 32):
                enc = tok(texts[b:b + 32], padding="max_length", truncation=True, max_length=128, return_tensors="pt")
                torch.softmax(hf(**enc.to(device)).logits.float(), dim=-1).cpu().numpy()
        return len(texts)

    def predict(model: Any, embeddings: bool) -> Callable[[], int]:
        def run() -> int:
            clear_lower_cache()  # cold: a pool's texts are new to the frozen-layer cache (as in a large pool's round)
            return len(model.predict(texts, embeddings=embeddings).probs)

        return run

    paths: dict[str, Callable[[], int]] = {
        "pipeline_naive": naive, "pipeline_batched": batched, "fixed_fp32": fixed,
        "alloop": predict(alloop, True), "alloop_probs": predict(alloop, False),
        "alloop_fp32": predict(alloop_fp32, True),
    }
    warm = texts[:8]
    pipe(warm, batch_size=8)
    alloop.predict(warm)
    alloop_fp32.predict(warm)
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    counts: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved: the shared CPU's drift spreads over every path
        for name, fn in paths.items():
            t0 = time.perf_counter()
            counts[name] = fn()
            seconds[name].append(time.perf_counter() - t0)
    rates = {name: counts[name] / statistics.median(secs) for name, secs in seconds.items()}
    tokens = sum(min(128, len(ids)) for ids in tok(texts)["input_ids"]) / len(texts)
    flops = linear_flops_per_token(hf.config)
    rows = [_emit("throughput", {"path": "matmul_peak", **matmul_peak(hf.config),
                                 "tokens_per_text": round(tokens, 1), "linear_gflop_per_token": flops / 1e9})]
    for name, rate in rates.items():
        rows.append(_emit("throughput", {"path": name, "texts": counts[name], "texts_per_s": round(rate, 1),
                                         "x_naive": round(rate / rates["pipeline_naive"], 2),
                                         "linear_gflops": round(rate * tokens * flops / 1e9, 1),
                                         "seconds": _median(seconds[name]), "repeats": args.repeats,
                                         "precision": alloop.precision if name in ("alloop", "alloop_probs")
                                         else "fp32", "device": str(device),
                                         "torch_threads": torch.get_num_threads()}))
    return rows


def part_memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "scale.sqlite"
            row: dict[str, Any] = {"pool": n, "strategy": args.strategy, "chunk": args.chunk, **build_store(db, n)}
            for mode in (["0", "1"] if args.one_shot else ["0"]):
                row["one_shot" if mode == "1" else "chunked"] = _run_child(
                    {"kind": "memory", "db": str(db), "strategy": args.strategy, "chunk": args.chunk,
                     "one_shot": mode == "1", "batch": args.batch})
            rows.append(_emit("memory", row))
    return rows


def _emit(part: str, row: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps({"part": part, **row}), flush=True)
    return row


def _child(spec: dict[str, Any]) -> int:
    kind = spec.pop("kind")
    if kind == "score-worker":
        score_worker_child(**spec)
        return 0
    if kind == "import":
        out = import_child(**spec)
    elif kind == "round":
        out = round_child(**spec)
    elif kind == "memory":
        out = score_once(Path(spec["db"]), spec["strategy"], spec["chunk"], spec["one_shot"], spec["batch"])
    else:
        raise SystemExit(f"unknown child {kind!r}")
    print(json.dumps(out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--part", choices=PARTS, action="append", help="part to run (repeatable; default: "
                        + ", ".join(DEFAULT_PARTS) + ")")
    parser.add_argument("--import-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--import-batch", type=int, default=10_000)
    parser.add_argument("--round-sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--labels", type=int, default=100, help="labelled TREC questions in round/fanout projects")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the round part's process")
    parser.add_argument("--throughput-n", type=int, default=2000)
    parser.add_argument("--naive-n", type=int, default=500, help="texts for the one-call-per-text pipeline (0 = all)")
    parser.add_argument("--fanout-size", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1, help="runs per measurement (medians reported)")
    parser.add_argument("--fast-train", action="store_true", help="a few fine-tuning steps (smoke tests)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="memory part's pools")
    parser.add_argument("--strategy", default="least_confidence", help="memory part")
    parser.add_argument("--chunk", type=int, default=2048, help="memory part")
    parser.add_argument("--batch", type=int, default=50, help="memory part")
    parser.add_argument("--one-shot", action="store_true", help="memory part: also the one-call path (rank_pool)")
    parser.add_argument("--rss-log", default=None, help="round part: the round's RSS every 15 s, appended to "
                        "PATH.<pool size> as JSON lines")
    parser.add_argument("--out", type=Path, default=None, help="write the whole run as JSON here")
    parser.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_json:
        return _child(json.loads(args.child_json))
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    parts = list(dict.fromkeys(args.part or DEFAULT_PARTS))
    runners = {"import": part_import, "round": part_round, "throughput": part_throughput, "fanout": part_fanout,
               "memory": part_memory}
    doc: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                           "machine": _machine(), "results": {}}
    for part in parts:
        doc["results"][part] = runners[part](args)
    print(json.dumps(doc))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
