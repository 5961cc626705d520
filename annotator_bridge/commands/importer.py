"""``al-loop import --project ID PATH``: import a large file into a project in batches, with a progress bar.

Runs in this process, straight on the database (``AL_LOOP_DATABASE_URL`` / ``AL_LOOP_HOME``, or ``--db``),
as ``al-loop status`` does: no web server or worker is needed. The import is recorded as an import job
(``GET /api/projects/<id>/imports/<import_id>`` shows it while it runs) and read by
``annotator_bridge.loop.imports.run_import``: ``--batch-size`` examples per transaction, the progress bar
counting the file's bytes. The file is the caller's own (``AL_LOOP_IMPORT_DIRS`` and ``AL_LOOP_MAX_IMPORT_MB``
bound what the *server* reads for others; memory here does not grow with the file for the streamed formats).

An error in the file stops the import with its file and line: the batches before it stay stored, and
running the command again on the fixed file adds only the rest. Exit status 0 on success, 1 when the
import failed, 2 for a bad argument or project. A project linked to Label Studio gets its tasks for
the new items at its next reconcile (``POST /api/projects/<id>/reconcile``, or the next round's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from al_loop.data.readers import FORMATS
from al_loop.data.stream import DEFAULT_BATCH_SIZE, file_size
from al_loop.errors import ConfigError
from al_loop.states import ImportStatus
from al_loop.store import Store
from al_loop.store.imports import ImportJob, create_import
from annotator_bridge.loop.imports import run_import
from annotator_bridge.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "import",
        help="import a (large) file of texts into a project, in batches, with a progress bar",
        description="Read PATH in batches and add its items to project ID (one transaction per batch). Reads the "
        "database named by AL_LOOP_DATABASE_URL (default $AL_LOOP_HOME/al-loop.db) or --db.",
    )
    p.add_argument("path", metavar="PATH", help="the file (trec, sst, jsonl, csv stream; conll/bio are read whole)")
    p.add_argument("--project", "-p", type=int, required=True, metavar="ID", help="the project to import into")
    p.add_argument("--format", choices=FORMATS, default=None, help="file format (default: detected)")
    p.add_argument("--split", choices=("pool", "test"), default="pool", help="pool (default) or test")
    p.add_argument("--record-labels", action="store_true",
                   help="also record the file's gold labels as labels (source 'import') so they train the next round")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help=f"items per transaction (default {DEFAULT_BATCH_SIZE:,})")
    p.add_argument("--db", default=None, metavar="URL",
                   help="SQLAlchemy database URL (default: from AL_LOOP_DATABASE_URL / AL_LOOP_HOME)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (a summary line only)")
    p.set_defaults(func=run_import_command)


def run_import_command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    path = Path(args.path)
    url = args.db or Settings.from_env().database_url
    store = Store(url)
    try:
        project = store.get_project(args.project)
        job = create_import(store, project.id, str(path.absolute()), format=args.format, split=args.split,
                            options={"record_labels": args.record_labels, "source": "cli"},
                            bytes_total=file_size(path))
        bar = _Progress(job, err, disabled=args.no_progress)
        try:
            job = run_import(store, job.id, path, max_bytes=None, follow_symlinks=True, batch_size=args.batch_size,
                             on_batch=bar.update)
        finally:
            bar.close()
        link = store.get_link(project.id)
    finally:
        store.dispose()
    print(f"import {job.id} into project {job.project_id} ({job.split}): {job.status.value}; {job.rows_read:,} rows "
          f"read, {job.added:,} added, {job.existing:,} already there, {job.duplicates:,} duplicate texts"
          + (f", {job.labels_recorded:,} labels recorded" if args.record_labels else ""), file=out)
    if job.status is not ImportStatus.SUCCEEDED:
        print(f"al-loop: error: {job.error} (the {job.added:,} items stored before it are kept; import the fixed "
              "file again to add the rest)", file=err)
        return 1
    if link is not None and job.added and job.split == "pool":
        print(f"project {project.id} is linked to Label Studio project {link.ls_project_id}: the new items get their "
              f"tasks at the next reconcile (POST /api/projects/{project.id}/reconcile, or the next round)", file=out)
    return 0


class _Progress:
    """A tqdm bar over the file's bytes, moved to each job update (rows and added items in its postfix)."""

    def __init__(self, job: ImportJob, stream: TextIO, disabled: bool) -> None:
        from tqdm import tqdm

        self._tqdm: Any = tqdm(total=job.bytes_total or None, unit="B", unit_scale=True, unit_divisor=1024,
                               desc=f"import {job.id}", file=stream, disable=disabled, mininterval=0.5)
        self._done = 0

    def update(self, job: ImportJob) -> None:
        step = max(0, job.bytes_read - self._done)
        self._done += step
        self._tqdm.set_postfix(rows=f"{job.rows_read:,}", added=f"{job.added:,}", refresh=False)
        self._tqdm.update(step)

    def close(self) -> None:
        self._tqdm.close()
