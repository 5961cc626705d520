"""``al-loop status``: the dashboard's key facts as terminal tables.

``al-loop status`` lists every project (rounds, labels, score and its change, promoted
version, active round) plus queues and workers; ``al-loop status --project ID`` shows one
project in detail (rounds, model versions, per-label scores, label distribution,
annotators, the batch in Label Studio, liveness). ``--json`` prints the same facts as JSON
(``annotator_bridge.monitoring`` format). The database comes from ``Settings.from_env()``
(``AL_LOOP_DATABASE_URL`` / ``AL_LOOP_HOME``) unless ``--db`` names one.

Queue depth and workers come from ``annotator_bridge.worker.probe.make_queue_probe(settings)``:
the broker's queues and the Celery workers that answer a broadcast (``--no-probe`` skips it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from al_loop.states import RoundStatus
from al_loop.store import Store
from annotator_bridge import monitoring
from annotator_bridge.monitoring import NullQueueProbe, QueueProbe
from annotator_bridge.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "status",
        help="show rounds, scores, labels, annotators and workers of one project or all",
        description="Print the loop's state as tables: every project, or one project in detail with --project. "
        "Reads the database named by AL_LOOP_DATABASE_URL (default $AL_LOOP_HOME/al-loop.db) or --db.",
    )
    p.add_argument("--project", "-p", type=int, default=None, metavar="ID", help="one project in detail")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--db", default=None, metavar="URL",
                   help="SQLAlchemy database URL (default: from AL_LOOP_DATABASE_URL / AL_LOOP_HOME)")
    p.add_argument("--rounds", type=int, default=15, metavar="N", help="show the newest N rounds (default 15)")
    p.add_argument("--no-probe", action="store_true", help="do not ask the broker about queues and workers")
    p.set_defaults(func=run_status)


# --------------------------------------------------------------------------- setup
def _settings() -> Settings:
    return Settings.from_env()


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    if url.startswith(prefix) and url not in (prefix, prefix + ":memory:"):
        return Path(url[len(prefix):])
    return None


def load_queue_probe(settings: Settings) -> QueueProbe:
    """The Celery probe of the broker and workers ``settings`` name (queues waiting, workers answering)."""
    from annotator_bridge.worker.probe import make_queue_probe

    return make_queue_probe(settings)


def run_status(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = None
    url = args.db
    if url is None:
        settings = _settings()
        url = settings.database_url
    db_file = _sqlite_file(url)
    if db_file is not None and not db_file.exists():
        print(f"al-loop: no database at {db_file} (set AL_LOOP_HOME or AL_LOOP_DATABASE_URL, or pass --db)",
              file=sys.stderr)
        return 1
    store = Store(url)
    try:
        probe: QueueProbe = NullQueueProbe()
        if not args.no_probe and settings is not None:
            probe = load_queue_probe(settings)
        if args.project is not None:
            snap = monitoring.project_snapshot(store, args.project, probe)
            if args.json:
                print(json.dumps(snap, indent=2, default=str), file=out)
            else:
                print(render_project(snap, max_rounds=args.rounds), file=out)
        else:
            projects = [monitoring.project_summary(store, p) for p in store.list_projects()]
            queues = monitoring.probe_queues(probe)
            if args.json:
                print(json.dumps({"projects": projects, "queues": queues}, indent=2, default=str), file=out)
            else:
                print(render_projects(projects, queues), file=out)
    finally:
        store.dispose()
    return 0


# ------------------------------------------------------------------------ rendering
def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def score(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if _is_num(v) else "-"


def delta(v: Any) -> str:
    return f"{v:+.3f}" if _is_num(v) else ""


def num(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:,}" if isinstance(v, int) else f"{v:,.1f}" if _is_num(v) else str(v)


def dur(v: Any) -> str:
    return monitoring.format_duration(v, sep="")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = (), indent: str = "  ") -> str:
    """Plain-text table; columns whose index is in ``right`` are right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append(indent + "  ".join(parts).rstrip())
        if n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _queues_text(q: dict[str, Any]) -> str:
    if not q.get("available", True):
        return "queues and workers: unknown (no broker probe)"
    if q.get("error"):
        return f"queues and workers: unavailable ({q['error']})"
    depth = ", ".join(f"{k} {v}" for k, v in sorted(q["queues"].items())) or "none"
    workers = ", ".join(str(w.get("name", "?")) for w in q["workers"]) or "none answered"
    return f"queues waiting: {depth} · workers ({len(q['workers'])}): {workers}"


def _last_round(r: dict[str, Any] | None) -> str:
    if r is None:
        return "none"
    text = f"#{r['index']} {r['status']}"
    if r["status"] == RoundStatus.RUNNING:
        text += f" {r['phase']} {r['progress'] * 100:.0f}%"
        if r.get("stale"):
            text += " STALE"
    return text


def render_projects(projects: Sequence[dict[str, Any]], queues: dict[str, Any]) -> str:
    if not projects:
        return "No projects yet.\n" + _queues_text(queues)
    rows = [
        [p["id"], p["name"], p["task"], p["rounds"], _last_round(p["last_round"]), num(p["labelled"]),
         num(p["unlabelled"]), score(p["score"]), delta(p["delta"]), p["promoted"] or "-"]
        for p in projects
    ]
    head = ["id", "name", "task", "rounds", "last round", "labelled", "unlabelled", "score", "Δ", "promoted version"]
    return "PROJECTS\n" + table(head, rows, right=(0, 3, 5, 6, 7, 8)) + "\n\n" + _queues_text(queues)


def render_project(s: dict[str, Any], max_rounds: int = 15) -> str:
    p, sm, lv = s["project"], s["summary"], s["liveness"]
    metric = s["curve"]["metric"]
    out = [
        f"PROJECT {p['id']} {p['name']!r}: {p['task']}, strategy {p['loop'].get('strategy')}, "
        f"batch {p['loop'].get('batch_size')}, base model {p['base_model']}",
        f"  {metric}: {score(sm['score'])} {delta(sm['delta'])}".rstrip()
        + f" · labelled {num(sm['labelled'])}/{num(sm['pool'])} ({num(sm['tokens'])} tokens, {num(sm['skipped'])} "
        f"skipped) · promoted {sm['promoted'] or '-'} ({score(sm['promoted_score'])})",
    ]
    ar = lv.get("active_round")
    if ar:
        if ar["status"] == RoundStatus.RUNNING:
            line = (f"  ACTIVE ROUND #{ar['index']} running: phase {ar['phase']} {ar['progress'] * 100:.0f}%, worker "
                    f"{ar['owner'] or '?'}, heartbeat {dur(ar['heartbeat_age_s'])} ago")
            if ar["stale"]:
                line += " (STALE: the worker may have died)"
        else:
            line = f"  ACTIVE ROUND #{ar['index']} pending for {dur(ar.get('waiting_s'))}, waiting for a worker"
        out.append(line)
    out.append("  " + _queues_text(lv))

    adapt = monitoring.adaptation_line(s.get("adaptation"))
    if adapt is not None:
        out.append("  " + adapt)
    out.extend(_stopping_lines(s.get("stopping")))

    rounds = list(reversed(s["rounds"]))[:max_rounds]
    out.append(f"\nROUNDS (newest first{', ' + str(max_rounds) + ' shown' if len(s['rounds']) > max_rounds else ''})")
    if rounds:
        rows = []
        for r in rounds:
            running = r["status"] == RoundStatus.RUNNING
            status = r["status"] + (f" {r['phase']} {r['progress'] * 100:.0f}%" if running else "")
            d = r["durations"]
            rows.append([r["index"], status, num(r["labels"]), num(r["tokens"]), r["version"] or "-", score(r["score"]),
                         delta(r["delta"]), dur(d["train"]), dur(d["score"]), dur(d["push"]),
                         dur(d["total"] if d["total"] is not None else r["elapsed_s"]), r["strategy"],
                         (r["error"] or "")[:60]])
        out.append(table(["#", "status", "labels", "tokens", "model version", metric, "Δ", "train", "score", "push",
                          "total", "strategy", "error"], rows, right=(0, 2, 3, 5, 6, 7, 8, 9, 10)))
    else:
        out.append("  none yet")

    out.append("\nMODEL VERSIONS")
    if s["versions"]:
        rows = [[v["id"], v["name"], v["round_index"] if v["round_index"] is not None else "-", score(v["score"]),
                 delta(v["delta"]), v["status"] + (" *" if v["promoted"] else "")] for v in reversed(s["versions"])]
        out.append(table(["id", "name", "round", metric, "Δ", "status"], rows, right=(0, 2, 3, 4)))
    else:
        out.append("  none yet")

    cmp = s["per_label"]
    if cmp["rows"]:
        out.append(f"\nPER LABEL: {cmp['current']} vs {cmp['previous'] or '-'}")
        rows = [[r["label"], num(r["support"]),
                 score(r["current"]["precision"] if r["current"] else None),
                 score(r["current"]["recall"] if r["current"] else None),
                 score(r["current"]["f1"] if r["current"] else None),
                 score(r["previous"]["f1"] if r["previous"] else None), delta(r["delta_f1"])] for r in cmp["rows"]]
        out.append(table(["label", "support", "P", "R", "F1", "F1 prev", "ΔF1"], rows, right=(1, 2, 3, 4, 5, 6)))

    lab = s["labels"]
    out.append(f"\nLABELS ({lab['unit']}): {num(lab['labelled'])} labelled, {num(lab['skipped'])} skipped, "
               f"{num(lab['unlabelled'])} unlabelled, {num(lab['test'])} test items")
    if lab["per_label"]:
        out.append(table(["label", "count"], [[k, num(v)] for k, v in lab["per_label"].items()], right=(1,)))

    rate = s["annotation"]
    out.append(f"\nANNOTATORS: {rate['last_hour']} in the last hour, {rate['per_hour']}/h over {rate['hours']} h")
    if rate["annotators"]:
        rows = [[a["name"], a["last_hour"], a["per_hour"], num(a["total"]), num(a["skipped"]),
                 (dur(a["idle_s"]) + " ago") if a["idle_s"] is not None else "-"] for a in rate["annotators"]]
        out.append(table(["annotator", "last hour", "per hour", "total", "skipped", "last seen"], rows,
                         right=(1, 2, 3, 4, 5)))

    b = s["batch"]
    if b:
        out.append(f"\nBATCH IN LABEL STUDIO: round {b['round_index']} ({b['version']}), push {b['push_status']}, "
                   f"{b['done']}/{b['size']} answered")
        rows = [[it["rank"], it["item_id"], score(it["confidence"]), "yes" if it["answered"] else "no",
                 it["text"][:70]] for it in b["items"][:10]]
        if rows:
            out.append(table(["rank", "item", "confidence", "answered", "text"], rows, right=(0, 2)))
        if len(b["items"]) > 10:
            out.append(f"  ... {len(b['items']) - 10} more")
    if lv.get("workers"):
        out.append("\nWORKERS")
        rows = [[w.get("name", "?"), w.get("status", "online"), ", ".join(w.get("queues") or []),
                 w.get("active", "-"), dur(w.get("heartbeat_age_s"))] for w in lv["workers"]]
        out.append(table(["worker", "status", "queues", "active", "last seen"], rows, right=(3, 4)))
    return "\n".join(out)


def _pct(v: Any) -> str:
    return f"{v * 100:.1f}%" if _is_num(v) else "-"


def _stopping_lines(st: dict[str, Any] | None, trend: int = 8) -> list[str]:
    """The project's stopping advice (``monitoring.stopping_summary``): the sentence, the newest criteria and
    the kappa trend of the last ``trend`` measured rounds."""
    if not st:
        return []
    size = f"stop set {num(st['latest']['stop_set'])}" if st.get("latest") else f"stop set size {st['stop_set_size']}"
    lines = [f"\nWHEN TO STOP ({size}): {st['advice']}"]
    latest = st.get("latest")
    if latest:
        lines.append(f"  round {latest['round']} ({num(latest['labels'])} labels): kappa {score(latest['kappa'])}, "
                     f"mean of the last 3 {score(latest['kappa_mean'])}, changed {_pct(latest['changed'])}, "
                     f"uncertainty {score(latest['uncertainty'])} ({num(latest['compared'])} items compared)")
        lines.append("  " + " · ".join(f"{c['name'].replace('_', ' ')}: {'holds' if c['holds'] else 'no'}"
                                       for c in st["criteria"]))
        points = [p for p in st["trend"] if p["kappa"] is not None][-trend:]
        if points:
            lines.append("  kappa by labels: " + ", ".join(f"{num(p['labels'])}: {score(p['kappa'])}" for p in points))
    return lines


__all__ = ["add_parser", "load_queue_probe", "render_project", "render_projects", "run_status", "table"]
