"""Webhook ingest under load, on the real processes: redis-server, both Celery workers, ``al-loop serve``.

Everything runs on loopback in a temporary AL_LOOP_HOME (removed afterwards): a private
``redis-server`` on a free port, ``al-loop worker --queues default``, ``al-loop worker --queues
train --pool solo`` and ``al-loop serve`` (``--server``: werkzeug, its default as in ``al-loop serve``, or gunicorn). A
classification project linked to a (never contacted) Label Studio project id is written to the
database, with ``--labelled`` labels and a pool; a round is requested through the API and, once it
trains (fine-tuning MiniLM for ``--train-steps`` steps), ``--rate`` distinct ``ANNOTATION_CREATED``
webhooks per second are sent for ``--duration`` seconds by ``--senders`` separate processes
(``ingest_sender.py``: one asyncio loop each, every request serialised before the burst, a new
connection per webhook as Label Studio sends them; open loop: request ``n`` is due at ``n / rate``
whatever the answers before it). Reported (JSON):

* ``ack_p50_ms`` / ``ack_p99_ms`` / ``ack_max_ms``: from the request's scheduled time until its
  whole answer was read (so a late sender counts against the figure, nothing hides in a queue);
  ``ack_from_send_*``: the same from the moment the connection was opened;
* ``send_late_p50_ms`` / ``send_late_p99_ms`` / ``send_late_max_ms``: the sender's own lateness
  (connection opened after the scheduled time);
* ``cpu_ms_per_webhook``: CPU time (user + system) each process group spent during the burst, per
  webhook (``serve``, the workers, ``redis``, ``sender``): what the burst costs, independent of
  other load on the machine, unlike the latencies;
* ``slowest_at_s_ms``: the five slowest requests as [scheduled second of the burst, ms];
* ``http_5xx`` and ``errors`` (other failures: 4xx, refused, timeouts);
* ``lost``: events acknowledged but not in the database after the drain (must be 0);
* ``drain_s``: from the burst's end until every acknowledged event is in the database;
  ``ingest_per_s``: events / (burst + drain);
* ``during_training``: the share of the burst sent while the round was in its train phase.

Usage (the issue's figures: 200/s for 60 s; run it alone on the machine)::

    .venv/bin/python benchmarks/bench_ingest.py --rate 200 --duration 60 --out bench-results/ingest.json
    .venv/bin/python benchmarks/bench_ingest.py --rate 200 --duration 60 --no-round \\
        --out bench-results/ingest-noround.json
    .venv/bin/python benchmarks/bench_ingest.py --rate 100 --duration 5 --server werkzeug   # a quick check
    .venv/bin/python benchmarks/bench_ingest.py --rate 20 --duration 2 --no-round   # smoke (no model)

Bounded: the drain wait stops after ``--drain-timeout`` seconds (reported as lost events).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from al_loop.config import LoopConfig, TrainingConfig  # noqa: E402
from al_loop.data.schema import LabelSchema  # noqa: E402
from al_loop.store import Store  # noqa: E402
from al_loop.types import Example, ItemId, TaskKind  # noqa: E402
from annotator_bridge.client import ApiClient, wait_until  # noqa: E402
from annotator_bridge.commands.serve import DEFAULT_SERVER, SERVERS  # noqa: E402
from annotator_bridge.labelstudio.config import build_label_config  # noqa: E402
from annotator_bridge.settings import TRAIN_CPU_PRIORITIES, WEBHOOK_SECRET_HEADER  # noqa: E402
from annotator_bridge.stack.processes import SERVE_ARGS, WORKER_DEFAULT_ARGS, WORKER_TRAIN_ARGS  # noqa: E402

SENDER = Path(__file__).resolve().parent / "ingest_sender.py"
LS_PROJECT = 990_001  # the linked Label Studio project id (never contacted: webhooks carry the annotation)
LABELS = ("negative", "positive")
WORDS = ("river", "engine", "garden", "number", "violin", "planet", "castle", "winter", "copper", "harbor",
         "pencil", "forest", "signal", "ladder", "market", "orange", "rocket", "silver", "tunnel", "velvet")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _text(i: int) -> str:
    return " ".join(WORDS[(i * k + k * k) % len(WORDS)] for k in range(1, 9)) + f" number {i}"


class Procs:
    """The child processes, each in its own process group, logging under ``home/logs``."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env, self.children = home, env, []  # type: list[tuple[str, subprocess.Popen[bytes]]]
        (home / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(argv, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=str(REPO), start_new_session=True)
        self.children.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.home / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, text: str, timeout: float) -> None:
        proc = dict(self.children)[name]

        def seen() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited:\n{self.log(name)[-3000:]}")
            return text in self.log(name)

        wait_until(seen, timeout, 0.1, f"{name}: {text!r}")

    def stop(self) -> None:
        for _, proc in reversed(self.children):  # newest first: redis-server goes last
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _al_loop(*args: str) -> list[str]:
    return [sys.executable, "-m", "annotator_bridge.cli", *args]


def _project(store: Store, args: argparse.Namespace) -> tuple[int, list[tuple[ItemId, int, str]]]:
    schema = LabelSchema(TaskKind.CLASSIFICATION, LABELS)
    training = TrainingConfig(learner="finetune", max_length=64, batch_size=16, target_steps=args.train_steps,
                              min_epochs=1, max_epochs=1000)
    project = store.create_project("bench ingest", schema, "default", LoopConfig(strategy="random", batch_size=10,
                                                                                  seed_size=10, retrain_every=0),
                                   training, ls_project_id=LS_PROJECT,
                                   link={"label_config": build_label_config(schema), "attached": True})
    n_items = args.labelled + args.items
    store.add_items(project.id, [Example(ItemId(f"it-{i}"), _text(i)) for i in range(n_items)], "pool")
    store.set_ext_task_ids(project.id, {f"it-{i}": 10_000 + i for i in range(n_items)})
    for i in range(args.labelled):
        store.record_label(project.id, f"it-{i}", f"ls:{i + 1}", payload={"labels": [LABELS[i % 2]]},
                           source="labelstudio")
    items = [(ItemId(f"it-{i}"), 10_000 + i, _text(i)) for i in range(args.labelled, n_items)]
    return project.id, items


def _event(n: int, item: tuple[ItemId, int, str]) -> bytes:
    item_id, task_id, text = item
    body = {"action": "ANNOTATION_CREATED", "project": {"id": LS_PROJECT},
            "annotation": {"id": 1_000_000 + n, "task": task_id, "was_cancelled": False, "completed_by": 1,
                           "updated_at": "2026-12-01T10:00:00.000000Z",
                           "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                       "value": {"choices": [LABELS[n % 2]]}}]},
            "task": {"id": task_id, "data": {"text": text, "item_id": item_id}}}
    return json.dumps(body).encode()


def _burst(host: str, port: int, secret: str, events: list[bytes], rate: float, senders: int,
           workdir: Path) -> dict[str, Any]:
    """Send ``events`` open loop from ``senders`` processes (``ingest_sender.py``); see the module docstring."""
    job = {"host": host, "port": port, "path": "/webhook", "rate": rate, "timeout": 10.0,
           "headers": {"Content-Type": "application/json", WEBHOOK_SECRET_HEADER: secret},
           "bodies": [e.decode() for e in events], "parts": senders}
    t0 = time.monotonic() + 1.0 + 0.25 * senders  # the senders start and serialise their requests first
    procs = []
    for part in range(senders):
        job_file, out = workdir / f"sender-{part}.json", workdir / f"sender-{part}.out.json"
        job_file.write_text(json.dumps({**job, "part": part, "t0": t0}))
        procs.append((subprocess.Popen([sys.executable, str(SENDER), str(job_file), str(out)],
                                       stdin=subprocess.DEVNULL), out))
    results: list[list[Any]] = []
    sender_cpu = 0.0
    for proc, out in procs:
        if proc.wait() != 0:
            raise SystemExit(f"the sender exited with {proc.returncode}")
        done = json.loads(out.read_text())
        results.extend(done["results"])
        sender_cpu += float(done["cpu_s"])
    end = max((r[3] for r in results), default=t0)
    fails: dict[str, int] = {}
    ok: list[int] = []
    for n, _due, _start, _end, outcome in results:
        if outcome == 200:
            ok.append(n)
            continue
        kind = ("5xx" if outcome >= 500 else f"http_{outcome}") if isinstance(outcome, int) else str(outcome)
        fails[kind] = fails.get(kind, 0) + 1
    slowest = sorted(results, key=lambda r: r[1] - r[3])[:5]
    return {"slowest": [[round(r[1] - t0, 3), _ms(r[3] - r[1])] for r in slowest],
            "sender_cpu_s": sender_cpu, "ack": [r[3] - r[1] for r in results],
            "ack_sent": [r[3] - r[2] for r in results],
            "late": [max(0.0, r[2] - r[1]) for r in results], "fails": fails, "ok": ok, "seconds": end - t0,
            "end": end}


def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_exe = shutil.which("redis-server")
    if redis_exe is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    home = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    rport, port = _free_port(), _free_port()
    token, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AL_LOOP_", "LABEL_STUDIO_"))}
    env.update({"AL_LOOP_HOME": str(home), "AL_LOOP_DATABASE_URL": f"sqlite:///{home / 'al-loop.db'}",
                "AL_LOOP_BROKER_URL": f"redis://127.0.0.1:{rport}/0", "AL_LOOP_API_TOKEN": token,
                "AL_LOOP_WEBHOOK_SECRET": secret, "AL_LOOP_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
                "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                "AL_LOOP_TRAIN_CPU_PRIORITY": args.train_cpu_priority})
    procs = Procs(home, env)
    figures: dict[str, Any] = {"rate": args.rate, "duration_s": args.duration, "round": not args.no_round,
                               "cpus": os.cpu_count(), "train_cpu_priority": args.train_cpu_priority}
    store: Store | None = None
    try:
        procs.start("redis", [redis_exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                              "no", "--dir", str(home)])
        store = Store(env["AL_LOOP_DATABASE_URL"])
        pid, items = _project(store, args)
        procs.start("worker-default", _al_loop(*WORKER_DEFAULT_ARGS, "--loglevel", "info"))
        procs.start("worker-train", _al_loop(*WORKER_TRAIN_ARGS, "--loglevel", "info"))
        # the web process at the default log level: its access log (a line per request) is part of the cost
        procs.start("serve", _al_loop(*SERVE_ARGS, "--server", args.server, "--host", "127.0.0.1",
                                      "--port", str(port)), AL_LOOP_LOG_LEVEL="INFO")
        for name in ("worker-default", "worker-train"):
            procs.wait_log(name, "ready.", 120)
        url = f"http://127.0.0.1:{port}"
        server = dict(procs.children)["serve"]

        def up() -> bool:
            if server.poll() is not None:
                raise SystemExit(f"al-loop serve exited:\n{procs.log('serve')[-3000:]}")
            return _health(url)

        wait_until(up, 120, 0.1, "al-loop serve /health")
        api = ApiClient(url, token)
        if not args.no_round:
            rnd = api.post(f"/api/projects/{pid}/rounds", {})["round"]  # type: ignore[index]
            wait_until(lambda: _round(api, pid, rnd["index"]).get("phase") == "train", 600, 0.2, "the round to train")
        n = int(args.rate * args.duration)
        events = [_event(i, items[i % len(items)]) for i in range(n)]
        before = len(store.live_annotation_keys(pid, "labelstudio"))
        phases: list[str] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                phases.append(str(_round(api, pid, 0).get("phase")) if not args.no_round else "none")
                stop.wait(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        groups = {name: proc.pid for name, proc in procs.children}
        cpu_before = {name: _group_cpu_s(pgid) for name, pgid in groups.items()}
        res = _burst("127.0.0.1", port, secret, events, args.rate, args.senders, home)
        cpu = {name: _group_cpu_s(pgid) - cpu_before[name] for name, pgid in groups.items()}
        cpu["sender"] = res["sender_cpu_s"]
        burst_end = res["end"]
        stop.set()
        watcher.join()
        expected = before + len(res["ok"])
        deadline = burst_end + args.drain_timeout
        stored = before
        while time.monotonic() < deadline:
            stored = len(store.live_annotation_keys(pid, "labelstudio"))
            if stored >= expected:
                break
            time.sleep(0.05)
        drain_s = time.monotonic() - burst_end
        lat, sent, late = res["ack"], res["ack_sent"], res["late"]
        figures.update({
            "sent": n, "acked": len(res["ok"]), "burst_s": round(res["seconds"], 2), "senders": args.senders,
            "server": args.server,
            "ack_p50_ms": _ms(_pct(lat, 50)), "ack_p99_ms": _ms(_pct(lat, 99)), "ack_max_ms": _ms(max(lat, default=0)),
            "ack_from_send_p50_ms": _ms(_pct(sent, 50)), "ack_from_send_p99_ms": _ms(_pct(sent, 99)),
            "send_late_p50_ms": _ms(_pct(late, 50)), "send_late_p99_ms": _ms(_pct(late, 99)),
            "send_late_max_ms": _ms(max(late, default=0)),
            "slowest_at_s_ms": res["slowest"],
            "cpu_ms_per_webhook": {name: round(v * 1000 / max(1, n), 2) for name, v in cpu.items()},
            "http_5xx": res["fails"].get("5xx", 0), "errors": {k: v for k, v in res["fails"].items() if k != "5xx"},
            "lost": max(0, expected - stored), "drain_s": round(drain_s, 2) if stored >= expected else None,
            "ingest_per_s": round(len(res["ok"]) / (res["seconds"] + drain_s), 1) if stored >= expected else None,
            "during_training": round(phases.count("train") / len(phases), 2) if phases and not args.no_round else 0.0,
        })
    finally:
        procs.stop()
        if store is not None:
            store.dispose()
        if args.keep_home:
            print(f"home kept: {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)
    return figures


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of process group ``pgid`` (Linux /proc; 0 elsewhere)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ... utime(11) stime(12)
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _round(api: ApiClient, pid: int, index: int) -> dict[str, Any]:
    rounds = api.get(f"/api/projects/{pid}/rounds")["rounds"]  # type: ignore[index]
    rnd = next((r for r in rounds if r["index"] == index), None) or {}
    if rnd.get("status") in ("failed", "cancelled"):
        raise SystemExit(f"round {index} {rnd['status']}: {rnd.get('error')}")
    return rnd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0, help="webhooks per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of the burst")
    ap.add_argument("--senders", type=int, default=1, help="sender processes (each one asyncio loop)")
    ap.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER, help="al-loop serve --server")
    ap.add_argument("--labelled", type=int, default=200, help="labels the training round trains on")
    ap.add_argument("--items", type=int, default=2000, help="pool items the webhooks annotate (cycled)")
    ap.add_argument("--train-steps", type=int, default=600, help="fine-tuning steps of the round (long enough "
                                                                  "to outlast the burst)")
    ap.add_argument("--train-cpu-priority", choices=TRAIN_CPU_PRIORITIES, default="nice",
                    help="AL_LOOP_TRAIN_CPU_PRIORITY of the training worker")
    ap.add_argument("--no-round", action="store_true", help="no training round during the burst (smoke runs)")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait for the drain")
    ap.add_argument("--keep-home", action="store_true", help="keep the temporary AL_LOOP_HOME (logs)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.rate * args.duration > 100_000:
        raise SystemExit("--rate and --duration must be positive, at most 100,000 events")
    figures = run(args)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
