"""Responsiveness of the live loop, measured on the real local stack (``al-loop up`` without the demo).

Starts redis-server (or the filesystem broker), Label Studio from ``.ls-venv``, the two Celery
workers and ``al-loop serve`` in a temporary AL_LOOP_HOME, creates an NER project (NCBI-disease)
through al-loop's HTTP API, and then measures:

1. **webhook ack latency** (p50/p99, ms): ``POST /webhook`` with a real ``ANNOTATION_UPDATED``
   body and the secret header, sent sequentially *while a round is training* (the worker is
   busy; the web process must still answer at once);
2. **/predict** p50 (ms) for one task with a warm model (the promoted version already loaded);
3. **last annotation -> next predictions visible in Label Studio** (s): an annotator script
   labels ``--labels`` tasks through ``/next/``; the retrain policy fires on the last one; the
   clock stops when Label Studio's project.model_version is the new round's tag and it holds
   all of that version's predictions. With ``--rounds-before K`` the policy fires every
   ``labels / (K + 1)`` labels, so K trained rounds come before the measured one, as in a live project
   that retrains every batch; ``--warm-schedule F`` turns on ``training.warm_start`` with that share of the
   planned epochs, so the measured round continues the previous round's model.

Usage (the issue's size is ``--labels 1000``; that takes a while on a 2-core CPU)::

    .venv/bin/python benchmarks/bench_loop.py --labels 40 --pool 300
    .venv/bin/python benchmarks/bench_loop.py --labels 1000 --pool 3000 --out bench-results/loop-1000.json

Shared data: ``$AL_LOOP_SHARED_DATA`` or ``../shared/data`` (NCBI-disease ``train.tsv``/``devel.tsv``);
without it the shipped demo sample is used (600 sentences).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from al_loop.data.readers import dedupe_examples, read_examples  # noqa: E402
from al_loop.types import TaskKind  # noqa: E402
from annotator_bridge.client import ApiClient, wait_until  # noqa: E402
from annotator_bridge.labelstudio.annotator import Annotator  # noqa: E402
from annotator_bridge.labelstudio.gateway import LabelStudioGateway  # noqa: E402
from annotator_bridge.settings import WEBHOOK_SECRET_HEADER  # noqa: E402
from annotator_bridge.stack import DEMO_SAMPLE, DEMO_TEST_SAMPLE, LocalStack, StackConfig  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _data(n_pool: int) -> tuple[list[Any], list[Any], str]:
    shared = Path(os.environ.get("AL_LOOP_SHARED_DATA") or REPO.parent / "shared" / "data") / "ncbi_disease"
    if (shared / "train.tsv").exists():
        train, test, src = shared / "train.tsv", shared / "devel.tsv", str(shared)
    else:
        train, test, src = DEMO_SAMPLE, DEMO_TEST_SAMPLE, "shipped demo sample"
    pool, _ = dedupe_examples(read_examples(train, task=TaskKind.NER, format="bio"))
    tests = read_examples(test, task=TaskKind.NER, format="bio")[:100]
    return pool[:n_pool], tests, src


def _post_raw(url: str, body: dict[str, Any], headers: dict[str, str]) -> float:
    import urllib.request

    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json", **headers})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=int, default=40, help="labels annotated before the measured round (issue: 1000)")
    ap.add_argument("--pool", type=int, default=0, help="pool size (default 3 x labels, at least labels + 100)")
    ap.add_argument("--webhooks", type=int, default=200, help="webhook calls sent while the round trains")
    ap.add_argument("--predicts", type=int, default=30, help="warm /predict calls")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--target-steps", type=int, default=None,
                    help="TrainingConfig.target_steps of the project (default: the product's default)")
    ap.add_argument("--rounds-before", type=int, default=0,
                    help="trained rounds before the measured one (the policy fires every labels / (K + 1) labels)")
    ap.add_argument("--warm-schedule", type=float, default=None, metavar="F",
                    help="training.warm_start with warm_schedule F (share of the planned epochs)")
    ap.add_argument("--home", type=Path, default=None, help="AL_LOOP_HOME (default: a temp dir, removed after)")
    ap.add_argument("--broker", choices=("auto", "redis", "filesystem"), default="auto")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    n_pool = args.pool or max(3 * args.labels, args.labels + 100)
    pool, test, source = _data(n_pool)
    if len(pool) < args.labels + 10:
        raise SystemExit(f"only {len(pool)} sentences available; lower --labels")
    tmp = None
    home = args.home
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-loop-")
        home = Path(tmp.name)
    stack = LocalStack(StackConfig(home=home, api_port=0, ls_port=0, broker=args.broker, demo=False), sys.stderr)
    every = max(1, args.labels // (args.rounds_before + 1))
    measured = args.rounds_before + 1  # index of the measured round (round 0 is the cold start)
    figures: dict[str, Any] = {"labels": args.labels, "pool": len(pool), "data": source, "broker": None,
                               "rounds_before": args.rounds_before, "retrain_every": every,
                               "warm_schedule": args.warm_schedule}
    try:
        t0 = time.monotonic()
        stack.start()
        figures["stack_start_s"] = round(time.monotonic() - t0, 1)
        figures["broker"] = stack.broker_url.split(":")[0]
        api = ApiClient(stack.api_url, stack.env["AL_LOOP_API_TOKEN"])
        gw = LabelStudioGateway(stack.ls_url, stack.state["ls_token"], timeout=60)
        project = api.post("/api/projects", {
            "name": "bench NCBI-disease", "task": "ner", "labels": ["Disease"],
            "label_studio": {"title": "bench NCBI-disease"},
            "loop": {"strategy": "least_confidence", "seed_size": every, "batch_size": every,
                     "retrain_every": every},
            "training": {"max_length": args.max_length,
                         **({"target_steps": args.target_steps} if args.target_steps else {}),
                         **({"warm_start": True, "warm_schedule": args.warm_schedule}
                            if args.warm_schedule is not None else {})},
        })["project"]  # type: ignore[index]
        pid, ls_id = int(project["id"]), int(project["integration"]["ls_project_id"])
        items = [{"id": ex.item_id, "text": ex.text} for ex in pool]
        tests = [{"id": ex.item_id, "text": ex.text, "spans": [s.to_dict() for s in ex.spans or ()]} for ex in test]
        api.post(f"/api/projects/{pid}/items", {"items": tests, "split": "test"}, timeout=600)
        t_import = time.monotonic()
        api.post(f"/api/projects/{pid}/items", {"items": items, "start_round": True}, timeout=600)
        wait_until(lambda: (api.get(f"/api/projects/{pid}/status")["last_round"] or {}).get(  # type: ignore[index]
            "push_status") == "done", 600, 0.5, "round 0 in Label Studio")
        figures["import_and_round0_s"] = round(time.monotonic() - t_import, 1)

        # annotate through Label Studio; the policy fires on the last label
        annotator = Annotator(gw, ls_id, {ex.item_id: ex for ex in pool})

        def pushed(index: int) -> bool:
            rounds = api.get(f"/api/projects/{pid}/rounds")["rounds"]  # type: ignore[index]
            r = next((r for r in rounds if r["index"] == index), None)
            if r is not None and r["status"] in ("failed", "cancelled"):
                raise SystemExit(f"round {index} {r['status']}: {r.get('error')}")
            return r is not None and r.get("push_status") == "done"

        # the earlier rounds: label a batch, wait until its round is in Label Studio (so each round snapshots
        # exactly `every` more labels and the measured round fires on the last label)
        for k in range(1, measured):
            annotator.label(every)
            wait_until(lambda k=k: pushed(k), 1800, 0.5, f"round {k} in Label Studio")
        t_ann = time.monotonic()
        last_batch = args.labels - every * args.rounds_before
        annotator.label(last_batch)
        last_annotation = time.monotonic()
        figures["annotation_s_per_label"] = round((last_annotation - t_ann) / last_batch, 3)

        # webhook acks while the round trains
        def measured_round() -> dict[str, Any] | None:  # the measured round
            rounds = api.get(f"/api/projects/{pid}/rounds")["rounds"]  # type: ignore[index]
            return next((r for r in rounds if r["index"] == measured), None)

        wait_until(lambda: (measured_round() or {}).get("phase") == "train", 600, 0.2, f"round {measured} to train")
        task = annotator.served[0]
        ann = gw._raw("GET", f"api/tasks/{int(task['id'])}/annotations/")[0]
        body = {"action": "ANNOTATION_UPDATED", "annotation": ann, "task": {"id": task["id"], "data": task["data"]},
                "project": {"id": ls_id}}
        headers = {WEBHOOK_SECRET_HEADER: stack.env["AL_LOOP_WEBHOOK_SECRET"]}
        acks: list[float] = []
        during: list[bool] = []
        deadline = time.monotonic() + 120
        for _ in range(args.webhooks):
            if time.monotonic() > deadline:
                break
            acks.append(_post_raw(f"{stack.api_url}/webhook", body, headers))
            during.append((measured_round() or {}).get("phase") == "train")
        figures["webhook_acks"] = len(acks)
        figures["webhook_acks_during_training"] = sum(during)
        figures["webhook_ack_p50_ms"] = round(_pct(acks, 50) * 1000, 1)
        figures["webhook_ack_p99_ms"] = round(_pct(acks, 99) * 1000, 1)

        # last annotation -> the next round's predictions visible in Label Studio
        def visible() -> str | None:
            r = measured_round()
            if r is None or not r.get("version_tag"):
                return None
            if r["status"] in ("failed", "cancelled"):
                raise SystemExit(f"round {measured} {r['status']}: {r.get('error')}")
            tag = r["version_tag"]
            if gw.get_project(ls_id).model_version != tag:
                return None
            return tag if gw.model_versions(ls_id).get(tag, 0) >= len(pool) - args.labels else None

        tag = wait_until(visible, 3600, 0.25, f"round {measured} predictions in Label Studio")
        figures["last_annotation_to_predictions_visible_s"] = round(time.monotonic() - last_annotation, 1)
        r1 = measured_round() or {}
        figures["round1_timings_s"] = r1.get("timings")
        figures["round1_learner"] = (r1.get("metrics") or {}).get("learner")
        figures["round1_metrics"] = {k: v for k, v in (r1.get("metrics") or {}).items() if isinstance(v, int | float)}
        figures["round1_train_report"] = {k: v for k, v in ((r1.get("metrics") or {}).get("train") or {}).items()
                                          if k in ("epochs", "steps", "planned_epochs", "learner")}
        figures["rounds"] = [{"index": r["index"], "n_labels": r.get("n_labels"), "timings": r.get("timings")}
                             for r in api.get(f"/api/projects/{pid}/rounds")["rounds"]]  # type: ignore[index]

        # /predict with a warm model
        cfg_xml = gw.get_project(ls_id).label_config
        one = {"tasks": [{"id": task["id"], "data": task["data"]}], "project": f"{ls_id}.1", "label_config": cfg_xml}
        t_first = _post_raw(f"{stack.api_url}/predict", one, {})
        lat = [_post_raw(f"{stack.api_url}/predict", one, {}) for _ in range(args.predicts)]
        figures["predict_first_ms"] = round(t_first * 1000, 1)
        figures["predict_warm_p50_ms"] = round(_pct(lat, 50) * 1000, 1)
        figures["predict_warm_mean_ms"] = round(statistics.mean(lat) * 1000, 1)
        figures["model_version"] = tag
        gw.close()
    finally:
        stack.stop()
        if tmp is not None:
            tmp.cleanup()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
