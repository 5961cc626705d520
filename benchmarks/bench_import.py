"""Import rate and peak memory of a large file import (on demand, not in CI).

    .venv/bin/python benchmarks/bench_import.py --sizes 100000 1000000 [--format jsonl] [--batch-size 10000]

For each size it writes a JSON-lines (or CSV / TREC) file of synthetic short texts into a temporary folder:
sentences resampled from ``../shared/data`` (TREC questions, SST-2 sentences), each followed by 2-6 words
drawn from their vocabulary so that texts are distinct (about 1% come out as duplicates), with explicit ids.
Then, in a fresh Python process per size, it imports the file into a new SQLite database with
``annotator_bridge.loop.imports.run_import`` (what ``al-loop import`` and the import job run) and prints the
wall time, rows/s and the process's peak RSS (``resource.getrusage``: ``ru_maxrss``), plus the same for a
bare process (the interpreter and imports) so the import's own growth shows.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def _sentences() -> list[str]:
    out: list[str] = []
    for f in sorted((DATA / "trec").glob("TREC.*")):
        out += [ln.split(" ", 1)[1].strip() for ln in f.read_text(encoding="latin-1").splitlines() if " " in ln]
    for f in sorted((DATA / "sst2").glob("stsa.binary.*")):
        out += [ln[2:].strip() for ln in f.read_text(encoding="utf-8").splitlines() if len(ln) > 2]
    return [s for s in out if s]


def write_file(path: Path, n: int, fmt: str, seed: int = 0) -> None:
    rng = random.Random(seed)
    sentences = _sentences()
    vocab = sorted({w for s in sentences for w in s.split()})
    with path.open("w", encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            fh.write("id,text\n")
        for i in range(n):
            text = f"{rng.choice(sentences)} {' '.join(rng.choices(vocab, k=rng.randint(2, 6)))}"
            if fmt == "jsonl":
                fh.write(json.dumps({"id": f"t{i}", "text": text}) + "\n")
            elif fmt == "csv":
                fh.write(f"t{i},\"{text.replace(chr(34), chr(34) * 2)}\"\n")
            else:  # trec: the ids are generated (file name : index)
                fh.write(f"DESC:manner {text}\n")


def _child(db: str, path: str, batch_size: int) -> None:
    """Import ``path`` into a new project of ``db``; print one JSON line with the figures."""
    from al_loop.data.schema import LabelSchema
    from al_loop.store import Store
    from al_loop.store.imports import create_import
    from al_loop.types import TaskKind
    from annotator_bridge.loop.imports import run_import

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store = Store(db if "://" in db else f"sqlite:///{db}")
    project = store.create_project("bench", LabelSchema(TaskKind.CLASSIFICATION, ("ABBR", "DESC", "ENTY")))
    job = create_import(store, project.id, path, format=None, split="pool")
    start = time.perf_counter()
    job = run_import(store, job.id, Path(path), max_bytes=None, batch_size=batch_size)
    seconds = time.perf_counter() - start
    print(json.dumps({"status": job.status.value, "rows": job.rows_read, "added": job.added,
                      "duplicates": job.duplicates, "seconds": round(seconds, 1),
                      "rows_per_s": round(job.rows_read / seconds), "peak_rss_mib": round(
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "start_rss_mib": round(base_rss / 1024), "error": job.error}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--format", choices=("jsonl", "csv", "trec"), default="jsonl")
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--postgres", action="store_true",
                    help="import into a new database on a throwaway PostgreSQL server (tests/postgres_server.py: "
                         "fsync off, so it measures al-loop, not the disk)")
    ap.add_argument("--child", nargs=2, metavar=("DB", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1], args.batch_size)
        return 0
    server = None
    if args.postgres:
        sys.path.insert(0, str(REPO))
        from tests.postgres_server import PostgresServer

        server = PostgresServer().start()
    try:
        _run_sizes(args, server)
    finally:
        if server is not None:
            server.stop()
    return 0


def _run_sizes(args: argparse.Namespace, server: object | None) -> None:
    print("| texts | format | file MiB | wall s | rows/s | added | peak RSS MiB (process start) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"pool{n}.{'txt' if args.format == 'trec' else args.format}"
            write_file(path, n, args.format)
            db = server.new_database() if server is not None else str(Path(tmp) / f"bench{n}.db")  # type: ignore[attr-defined]
            res = subprocess.run([sys.executable, __file__, "--batch-size", str(args.batch_size), "--child", str(db),
                                  str(path)], capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            where = " (PostgreSQL)" if server else ""
            print(f"| {n:,} | {args.format}{where} | {path.stat().st_size / 2**20:.0f} | {r['seconds']} | "
                  f"{r['rows_per_s']:,} | {r['added']:,} | {r['peak_rss_mib']} ({r['start_rss_mib']}) |", flush=True)
            path.unlink()


if __name__ == "__main__":
    sys.exit(main())
