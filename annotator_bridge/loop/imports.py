"""Large file imports as jobs: read in batches, one transaction per batch, progress in the ``imports`` table.

``run_import`` is the core of ``POST /api/projects/<id>/items`` with a large ``path`` (run by a worker,
see ``ProjectSetup.start_import`` / ``execute_import``) and of ``al-loop import`` (run in the command's
process with a progress bar). Per batch (``batch_size`` examples, default 10,000) it validates the
examples as a body import does, stores them with ``Store.add_item_batch`` (item ids already in the
project are ``existing``, texts already there are ``duplicates``; both across batches exactly as
within one: each batch sees what the batches before it committed), records gold labels as labels when
asked, and writes the job's counters and ``bytes_read``.

An error in the file (bad line, duplicate item id, a label outside the project's) fails the job with
the error (file and line, never content) and keeps the batches stored before it: the job's ``added``
says how many. Importing the fixed file again skips what is there (``existing``) and adds the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from al_loop.data.align import check_spans
from al_loop.data.stream import DEFAULT_BATCH_SIZE, StreamProgress, iter_example_batches
from al_loop.errors import AlignmentError, AlLoopError, DataFormatError, UnknownLabelError
from al_loop.states import ImportStatus
from al_loop.store.imports import ImportJob, get_import, update_import
from al_loop.store.limits import MAX_ITEM_ID
from al_loop.store.records import Project, payload_from_example
from al_loop.store.repository import Store
from al_loop.types import Example, TaskKind
from annotator_bridge.loop.ports import IMPORT_SOURCE

log = logging.getLogger("annotator_bridge.loop")

SYNC_IMPORT_MAX_BYTES = 8 * 1024 * 1024
"""A ``path`` import of a larger file is an import job (202); a smaller one is imported in the request (201/200)
unless the body asks for ``"background": true``."""

OnBatch = Callable[[ImportJob], None]


def run_import(store: Store, import_id: int, path: Path, *, max_bytes: int | None, follow_symlinks: bool = False,
               batch_size: int = DEFAULT_BATCH_SIZE, on_batch: OnBatch | None = None) -> ImportJob:
    """Run a ``pending`` import job to its end (see the module docstring); returns the final job.

    Errors of the file or of the items end the job ``failed`` (returned, not raised); anything else
    (a database failure) fails the job too and is raised.
    """
    job = get_import(store, None, import_id)
    project = store.get_project(job.project_id)
    record_labels = bool(job.options.get("record_labels")) and job.split == "pool"
    job = update_import(store, import_id, status=ImportStatus.RUNNING)
    progress = StreamProgress()
    counts = {"rows_read": 0, "added": 0, "existing": 0, "duplicates": 0, "labels_recorded": 0}
    try:
        for batch in iter_example_batches(path, task=project.task, format=job.format, batch_size=batch_size,
                                          max_bytes=max_bytes, follow_symlinks=follow_symlinks, progress=progress):
            checked = validate_examples(project, batch, job.split, path)
            report = store.add_item_batch(project.id, checked, job.split)
            if record_labels:
                skipped = set(report.duplicate_texts)  # not stored: their text is another item's
                counts["labels_recorded"] += _record_labels(store, project.id,
                                                            [ex for ex in checked if ex.item_id not in skipped])
            counts["rows_read"] += len(batch)
            counts["added"] += report.added
            counts["existing"] += report.existing
            counts["duplicates"] += len(report.duplicate_texts)
            job = update_import(store, import_id, progress={**counts, "bytes_read": progress.bytes_read,
                                                            "bytes_total": progress.bytes_total})
            if on_batch is not None:
                on_batch(job)
    except AlLoopError as exc:
        log.warning("project %s: import %s failed after %d items: %s", project.id, import_id, counts["added"], exc)
        job = update_import(store, import_id, status=ImportStatus.FAILED, error=str(exc),
                            progress={**counts, "bytes_read": progress.bytes_read})
        if on_batch is not None:
            on_batch(job)
        return job
    except BaseException as exc:
        update_import(store, import_id, status=ImportStatus.FAILED,
                      error=f"internal error ({type(exc).__name__}); see the worker's log")
        raise
    job = update_import(store, import_id, status=ImportStatus.SUCCEEDED, progress={"bytes_read": progress.bytes_total})
    log.info("project %s: import %s read %d rows: %d added, %d existing, %d duplicate texts", project.id, import_id,
             job.rows_read, job.added, job.existing, job.duplicates)
    if on_batch is not None:
        on_batch(job)
    return job


def _record_labels(store: Store, project_id: int, examples: list[Example]) -> int:
    recorded = 0
    with store.transaction():
        for ex in examples:
            payload = payload_from_example(ex)
            if payload is None:
                continue
            outcome = store.record_label(project_id, ex.item_id, f"{IMPORT_SOURCE}:{ex.item_id}", payload=payload,
                                         source=IMPORT_SOURCE)
            recorded += outcome in ("created", "updated")
    return recorded


def validate_examples(project: Project, examples: list[Example], split: str,
                       from_file: Path | None = None) -> list[Example]:
    """The examples checked against the project; a file's are named by line, and no message quotes the file."""
    schema = project.schema
    seen: set[str] = set()
    out: list[Example] = []
    for ex in examples:
        what = f"item {ex.item_id!r}" if from_file is None else f"{from_file}:{ex.meta.get('source_line', '?')}"
        if len(ex.item_id) > MAX_ITEM_ID:  # the store's column; PostgreSQL would refuse it
            what = what if from_file is not None else f"item {ex.item_id[:40]!r}..."
            raise DataFormatError(f"{what}: the item id is {len(ex.item_id)} characters long; at most {MAX_ITEM_ID} "
                                  "are allowed")
        if ex.item_id in seen:
            raise DataFormatError(f"{what}: the item id appears twice in the import")
        seen.add(ex.item_id)
        if not isinstance(ex.text, str) or not ex.text.strip():
            raise DataFormatError(f"{what}: empty text")
        if "\x00" in ex.text:
            raise DataFormatError(f"{what}: the text contains a NUL character")
        try:
            if ex.spans is not None:
                if schema.task is not TaskKind.NER:
                    raise DataFormatError(f"{what}: spans given for a classification project")
                ex = Example(ex.item_id, ex.text, spans=check_spans(ex.text, ex.spans, schema))
            elif ex.labels is not None:
                if schema.task is not TaskKind.CLASSIFICATION:
                    raise DataFormatError(f"{what}: class labels given for an NER project")
                schema.check_example(ex)
            elif split == "test":
                raise DataFormatError(f"{what}: test items need gold labels")
        except (UnknownLabelError, AlignmentError) as exc:
            if from_file is None:
                raise
            raise type(exc)(f"{what}: a label outside the project's labels ({', '.join(schema.labels)}) or a span "
                            "that does not fit the text") from None
        out.append(ex)
    if not out:
        raise DataFormatError("no items to import")
    return out


__all__ = ["SYNC_IMPORT_MAX_BYTES", "run_import", "validate_examples"]
