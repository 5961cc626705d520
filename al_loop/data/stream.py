"""Read a large file in batches: :func:`iter_example_batches` yields lists of at most ``batch_size`` examples.

The examples, their item ids, ``meta`` and every error (file, 1-based line, column; never the file's
content) are the ones :func:`al_loop.data.readers.read_examples` gives for the same file: both use the
same per-line and per-record code. What differs is memory and the order of errors:

- ``trec``, ``sst``, JSON-lines ``jsonl`` and ``csv`` are read line by line (1 MiB of the file at a time):
  the reader holds one batch of examples, the current line, and the item ids seen so far (the
  duplicate-id check of the whole file: about 100 bytes per item, e.g. ~100 MB for a million);
- ``conll``/``bio`` (a sentence spans lines, and ``bio``'s tag column is decided from the whole file) and a
  ``.json`` file holding one JSON array are read whole (bounded by ``max_bytes``) and then batched;
- invalid UTF-8 is reported where the reader meets it (the whole-file reader reports it before
  anything else), so a file with two different errors may report the other one first;
- ``task`` is required (a project's task). JSON-lines with the other task's fields only (labels in an
  NER import, spans in a classification one) are refused at the first batch where that holds for every
  record read so far; the whole-file reader looks at the whole file.

``progress.bytes_read`` follows the file as it is consumed (for progress bars and the import API).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from al_loop.data.readers import (
    _SNIFF_BYTES,
    CLASSIFICATION_FORMATS,
    FORMATS,
    NER_FORMATS,
    _Ctx,
    _decide_task,
    _detect,
    _Fields,
    item_id_prefix,
    iter_csv,
    iter_sst,
    iter_trec,
    jsonl_example,
    jsonl_kinds,
    jsonl_records,
    logger,
    open_data_file,
    read_examples,
)
from al_loop.errors import ConfigError, DataFormatError, EmptyInputError
from al_loop.types import Example, TaskKind

DEFAULT_BATCH_SIZE = 10_000
STREAMED_FORMATS = ("trec", "sst", "jsonl", "csv")
_CHUNK = 1 << 20
_BREAK = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass
class StreamProgress:
    """How far a streamed read is: bytes of the file consumed, records (examples) read."""

    bytes_total: int = 0
    bytes_read: int = 0
    rows_read: int = 0


def iter_example_batches(
    path: str | Path,
    *,
    task: TaskKind | str,
    format: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    text_field: str = "text",
    label_field: str = "label",
    id_field: str = "id",
    spans_field: str = "spans",
    trec_fine: bool = False,
    max_bytes: int | None = None,
    follow_symlinks: bool = True,
    progress: StreamProgress | None = None,
) -> Iterator[list[Example]]:
    """The examples of ``path`` in file order, ``batch_size`` at a time (see the module docstring).

    The same arguments and errors as ``read_examples``; the file is checked (regular, at most
    ``max_bytes``) before the first batch. A batch is handed out before the next one is read.
    """
    if batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    try:
        kind = TaskKind(task)
    except ValueError:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(t.value for t in TaskKind)}") from None
    p = Path(path)
    progress = progress if progress is not None else StreamProgress()
    fd, size = open_data_file(p, max_bytes, follow_symlinks)
    progress.bytes_total = size
    with open(fd, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
        fmt = _detect(p, head) if format is None else format
        if fmt in NER_FORMATS and kind is TaskKind.CLASSIFICATION:
            raise DataFormatError(f"format {fmt!r} holds NER data; it cannot be read for task 'classification'", str(p))
        if fmt in CLASSIFICATION_FORMATS and kind is TaskKind.NER:
            raise DataFormatError(f"format {fmt!r} holds classification data; it cannot be read for task 'ner'",
                                  str(p))
        whole = fmt not in STREAMED_FORMATS or (fmt == "jsonl" and head.removeprefix(_BOM).lstrip()[:1] == b"[")
        if whole:
            fh.close()
            examples = read_examples(p, task=kind, format=fmt, text_field=text_field, label_field=label_field,
                                     id_field=id_field, spans_field=spans_field, trec_fine=trec_fine,
                                     max_bytes=max_bytes, follow_symlinks=follow_symlinks)
            progress.bytes_read = size
            for i in range(0, len(examples), batch_size):
                progress.rows_read = min(len(examples), i + batch_size)
                yield examples[i:i + batch_size]
            return
        fh.seek(0)
        ctx = _Ctx(str(p), item_id_prefix(p))
        lines = _Lines(fh, p, progress, max_bytes)
        fields = _Fields(text_field, label_field, id_field, spans_field)
        if fmt == "trec":
            examples_iter: Iterator[Example] = iter_trec(ctx, lines.numbered(), trec_fine)
        elif fmt == "sst":
            examples_iter = iter_sst(ctx, lines.numbered())
        elif fmt == "csv":
            examples_iter = iter_csv(ctx, lines.raw(), kind, fields)
        else:
            yield from _jsonl_batches(ctx, lines, kind, fields, batch_size, progress)
            _finish(ctx, p, lines, progress)
            return
        batch: list[Example] = []
        for ex in examples_iter:
            batch.append(ex)
            if len(batch) >= batch_size:
                progress.rows_read += len(batch)
                yield batch
                batch = []
        if batch:
            progress.rows_read += len(batch)
            yield batch
        _finish(ctx, p, lines, progress)


def _jsonl_batches(ctx: _Ctx, lines: _Lines, kind: TaskKind, f: _Fields, batch_size: int,
                   progress: StreamProgress) -> Iterator[list[Example]]:
    has_ner = has_cls = False
    recs = jsonl_records(ctx, lines.numbered())
    while True:
        chunk = [r for _, r in zip(range(batch_size), recs)]
        if not chunk:
            return
        ner, cls = jsonl_kinds(chunk, f)
        has_ner, has_cls = has_ner or ner, has_cls or cls
        _decide_task(ctx, kind, has_ner, has_cls, f)
        batch = [jsonl_example(ctx, r, kind, f) for r in chunk]
        del chunk
        progress.rows_read += len(batch)
        yield batch


def _finish(ctx: _Ctx, p: Path, lines: _Lines, progress: StreamProgress) -> None:
    if not progress.rows_read:
        if not lines.any_text:
            raise EmptyInputError("file is empty", str(p))
        raise EmptyInputError("no examples found in the file", str(p))
    if ctx.repaired:
        logger.warning(
            "%s: repaired %d malformed BIO tag(s) (I-X without a preceding B-X/I-X became B-X; first at line %d)",
            p, ctx.repaired, ctx.first_repair_line,
        )


class _Lines:
    """The file's lines, decoded one at a time (strict UTF-8, a leading BOM dropped), split as ``read_examples``
    splits them (``\\r\\n``, ``\\r`` or ``\\n``); ``progress.bytes_read`` counts the bytes handed out."""

    def __init__(self, fh: BinaryIO, path: Path, progress: StreamProgress, max_bytes: int | None) -> None:
        self.fh = fh
        self.path = path
        self.progress = progress
        self.max_bytes = max_bytes
        self.any_text = False

    def _split(self) -> Iterator[tuple[bytes, bytes]]:
        """(line without its break, the break) for every line of the file."""
        carry = b""
        first = True
        total = 0
        while True:
            chunk = self.fh.read(max(_CHUNK, len(_BOM)) if first else _CHUNK)
            eof = not chunk
            total += len(chunk)
            if self.max_bytes is not None and total > self.max_bytes:  # it grew since it was checked
                raise DataFormatError(f"file is larger than the limit of {self.max_bytes} bytes", str(self.path))
            if first:
                self.progress.bytes_read += len(_BOM) if chunk.startswith(_BOM) else 0
                chunk = chunk.removeprefix(_BOM)
                first = False
            data = carry + chunk
            pos = 0
            for m in _BREAK.finditer(data):
                if m.end() == len(data) and m.group() == b"\r" and not eof:
                    break  # a \r at the end of the buffer may be the first half of \r\n
                yield data[pos:m.start()], m.group()
                pos = m.end()
            carry = data[pos:]
            if eof:
                if carry:
                    yield carry, b""
                return

    def _decoded(self) -> Iterator[tuple[int, str, str]]:
        for lineno, (raw, brk) in enumerate(self._split(), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(
                    f"not valid UTF-8 at byte column {exc.start + 1}; re-encode the file as UTF-8 (e.g. iconv -f "
                    "ISO-8859-1 -t UTF-8)", str(self.path), lineno) from None
            self.progress.bytes_read += len(raw) + len(brk)
            if not self.any_text and line.strip():
                self.any_text = True
            yield lineno, line, brk.decode("ascii")

    def numbered(self) -> Iterator[tuple[int, str]]:
        """(1-based line number, line without its break)."""
        for lineno, line, _ in self._decoded():
            yield lineno, line

    def raw(self) -> Iterable[str]:
        """Each line with its break (what ``csv.reader`` reads)."""
        for _, line, brk in self._decoded():
            yield line + brk


def file_size(path: str | Path) -> int:
    """The size of ``path`` in bytes (0 when it cannot be read: the reader names the problem)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


__all__ = ["DEFAULT_BATCH_SIZE", "STREAMED_FORMATS", "StreamProgress", "file_size", "iter_example_batches"]
