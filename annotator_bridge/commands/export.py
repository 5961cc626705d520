"""``al-loop export --project ID [--version NAME] --out DIR [--force]``: a model version as a transformers folder.

Writes what ``transformers.pipeline("text-classification" | "token-classification", model=DIR)`` loads
offline: the version's safetensors weights, ``config.json`` (``id2label`` / ``label2id`` from the sorted
labels), the tokenizer files, al-loop's ``manifest.json`` / ``label_schema.json`` and a model card
``README.md`` (:mod:`al_loop.rounds.export`). Versions with al-loop's own heads (the defaults: the LP-FT heads
and the head learner) also get ``modeling_al_loop.py`` and load with ``trust_remote_code=True`` (no stock
transformers head L2-normalises the hidden states); the command says so. The version defaults to the
project's promoted one. Runs in this process on the database (``AL_LOOP_DATABASE_URL`` / ``AL_LOOP_HOME``, or
``--db``) and reads the artifact folder the version records, as ``al-loop status`` does; no server is needed.

Exit status: 0 written; 1 refused (an artifact that is not what its version says, a head-learner version whose
base model is gone, a version without an artifact, a non-empty ``--out`` without ``--force``); 2 an unknown
project or version.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from al_loop.errors import ConflictError, NotExportableError
from al_loop.rounds.export import REMOTE_CODE_REASON, plan_export, write_export
from al_loop.store import Store
from annotator_bridge.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export",
        help="write a model version as a folder transformers.pipeline loads, with a model card",
        description="Export a model version of project ID (default: the promoted one) to DIR: safetensors "
        "weights, config.json with the labels, tokenizer, al-loop's manifest and a model card README.md; al-loop's "
        "own heads (the defaults) with modeling_al_loop.py, loaded with trust_remote_code=True. "
        "Reads the database named by AL_LOOP_DATABASE_URL (default $AL_LOOP_HOME/al-loop.db) or --db.",
    )
    p.add_argument("--project", "-p", type=int, required=True, metavar="ID", help="the project")
    p.add_argument("--version", default=None, metavar="NAME",
                   help="the model version's name, e.g. al-r005-1a2b3c4d (default: the promoted version)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="the folder to write (new or empty)")
    p.add_argument("--force", action="store_true", help="replace DIR even when it is not empty")
    p.add_argument("--db", default=None, metavar="URL",
                   help="SQLAlchemy database URL (default: from AL_LOOP_DATABASE_URL / AL_LOOP_HOME)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    store = Store(args.db or Settings.from_env().database_url)
    try:
        try:
            plan = plan_export(store, args.project, args.version)
            path = write_export(plan, args.out, force=args.force)
        except (NotExportableError, ConflictError) as exc:
            print(f"al-loop: export refused: {exc}", file=err)
            return 1
    finally:
        store.dispose()
    size = sum(f.size for f in plan.files)
    remote = ", trust_remote_code=True" if plan.custom_code else ""
    print(f"exported model version {plan.version.name} of project {plan.project.id} to {path} "
          f"({len(plan.files)} files, {size / 2**20:.1f} MiB); load it with "
          f"transformers.pipeline({plan.pipeline_task!r}, model={str(path)!r}{remote})", file=out)
    if plan.custom_code:
        print(f"trust_remote_code=True is needed: this version has al-loop's own head, and {REMOTE_CODE_REASON}",
              file=out)
    return 0
