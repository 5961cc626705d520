"""Read labelled or unlabelled texts from files into :class:`~al_loop.types.Example`.

Formats (``FORMATS``):

``conll``
    One token per line, whitespace-separated columns, the BIO tag in the LAST
    column (e.g. CoNLL-2003 ``TOKEN POS CHUNK NER``); every token line has the
    same number of columns (>= 2). A blank line ends a sentence; ``-DOCSTART-``
    lines are skipped.
``bio``
    Two columns per token line, ``TOKEN<TAB>TAG`` or ``TAG<TAB>TOKEN``: the tag
    column is detected per file as the one whose values all look like
    ``O``/``B-X``/``I-X`` (the last column wins if both do).
``trec``
    ``COARSE:fine question text`` per line; the label is ``COARSE`` (e.g.
    ``DESC``), or the whole ``COARSE:fine`` with ``trec_fine=True``.
``sst``
    ``LABEL sentence text`` per line, LABEL an integer (e.g. ``stsa.binary.*``).
``jsonl``
    One JSON object per line (a ``.json`` file holding one JSON array of objects
    is accepted too). NER: ``{"text", "spans": [{"start", "end", "label"}]}`` or
    ``{"tokens": [...], "tags": [...]}`` (with an optional ``"text"`` the tokens
    are located in it); classification: ``{"text", "label": "x"}`` or
    ``"label": ["a", "b"]`` (multi-label). No spans/tags/label = unlabelled.
``csv``
    A header row, then one row per text. Classification labels in
    ``label_field`` (multi-label as ``a|b``), NER spans in ``spans_field`` as a
    JSON list. An empty cell = unlabelled.

Conventions:

- Token formats become text by joining the tokens with single spaces; entity
  spans are character offsets into that text, end-exclusive
  (``text[span.start:span.end]`` is the entity's tokens joined by spaces).
- Item ids: the record's ``id_field`` when present and non-empty (JSONL/CSV),
  else ``f"{item_id_prefix(path)}:{index}"`` with ``index`` the 0-based
  example index in the file. The prefix is the file name without a known data
  extension (``train.txt`` -> ``train``), else the whole file name
  (``TREC.train`` -> ``TREC.train``) so sibling splits never share ids. Ids are
  unique within a file (a duplicate explicit id is a DataFormatError).
- ``Example.meta["source_line"]`` is the 1-based line where the example starts
  (absent for JSON arrays); extra JSONL keys / CSV columns are kept in ``meta``.
- Malformed BIO (``I-X`` not after ``B-X``/``I-X``) is repaired to ``B-X``
  (conlleval convention) and one warning per file is logged on the
  ``al_loop.data`` logger with the count.
- Errors: :class:`~al_loop.errors.DataFormatError` naming the file, the
  1-based line and, where one is known, the column; messages never quote the
  file's content (a server may be asked to read a file it should not show);
  :class:`~al_loop.errors.EmptyInputError` for an empty file or one without
  examples.
- Only regular files are read (FIFOs, devices and directories are refused
  without blocking), each file is opened once, and ``max_bytes`` caps its size.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from al_loop.data.align import check_spans, is_bio_tag, locate_tokens, repair_bio, tokens_to_text, word_tags_to_spans
from al_loop.errors import AlignmentError, ConfigError, DataFormatError, EmptyInputError
from al_loop.types import Example, ItemId, Span, TaskKind

logger = logging.getLogger("al_loop.data")

FORMATS = ("conll", "bio", "trec", "sst", "jsonl", "csv")
NER_FORMATS = ("conll", "bio")
CLASSIFICATION_FORMATS = ("trec", "sst")

_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".bio": "bio", ".tsv": "bio"}
_STRIPPED_EXTENSIONS = frozenset({".txt", ".tsv", ".bio", ".iob", ".conll", ".jsonl", ".json", ".csv"})
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_TREC_LINE = re.compile(r"[A-Z]+:\w+ ")
_SST_LINE = re.compile(r"[0-9] ")
_TREC_LABEL = re.compile(r"([A-Za-z]+):(\S+)\Z")
_SST_LABEL = re.compile(r"-?[0-9]+\Z")
_DOCSTART = "-DOCSTART-"
_SNIFF_BYTES = 1 << 18
_SNIFF_LINES = 200


# --------------------------------------------------------------------------- public API


def item_id_prefix(path: str | Path) -> str:
    """The prefix of generated item ids: the file name without a known data extension."""
    p = Path(path)
    return p.stem if p.suffix.lower() in _STRIPPED_EXTENSIONS else p.name


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path``: by extension, then by content.

    ``.jsonl``/``.json`` -> jsonl, ``.csv`` -> csv, ``.bio``/``.tsv`` -> bio
    (conll when its token lines have more than two columns). Otherwise the first
    lines decide: token lines with >= 2 columns whose last (or, with two
    columns, first) column is a BIO tag, or a ``-DOCSTART-`` line -> conll
    (more than two columns) or bio; ``^[A-Z]+:\\w+ `` -> trec; ``^[0-9] `` ->
    sst; ``{`` or ``[`` -> jsonl.

    Raises:
        DataFormatError: when the file is missing or the format cannot be told
            (the message asks for ``--format``).
        EmptyInputError: for an empty file.
    """
    p = Path(path)
    return _detect(p, _read_bytes(p, limit=_SNIFF_BYTES))


def _detect(p: Path, raw: bytes) -> str:
    raw = raw[:_SNIFF_BYTES]
    parts = _LINE_BREAK.split(raw.decode("utf-8", errors="replace").removeprefix("\ufeff"))
    if len(raw) >= _SNIFF_BYTES:
        parts = parts[:-1]  # the last line may be cut
    lines = [ln for ln in parts if ln.strip()]
    ext_fmt = _EXTENSIONS.get(p.suffix.lower())
    if ext_fmt == "bio":
        return _sniff_tokens(lines) or "bio"
    if ext_fmt is not None:
        return ext_fmt
    if not lines:
        raise EmptyInputError("file is empty", str(p))
    token_fmt = _sniff_tokens(lines)
    if token_fmt is not None:
        return token_fmt
    first = lines[0].strip()
    if _TREC_LINE.match(first):
        return "trec"
    if _SST_LINE.match(first):
        return "sst"
    if first[:1] in "{[":
        return "jsonl"
    raise DataFormatError(
        f"cannot tell the file format from its extension or content; pass --format (one of {', '.join(FORMATS)})",
        str(p),
    )


def read_examples(
    path: str | Path,
    *,
    task: TaskKind | str | None = None,
    format: str | None = None,
    text_field: str = "text",
    label_field: str = "label",
    id_field: str = "id",
    spans_field: str = "spans",
    trec_fine: bool = False,
    max_bytes: int | None = None,
    follow_symlinks: bool = True,
) -> list[Example]:
    """Read every example of ``path`` in file order.

    The file is opened once, exactly at ``path`` (no ``~`` expansion; with
    ``follow_symlinks=False`` a symlink is refused), and must be a regular file
    of at most ``max_bytes`` bytes (no limit when None).

    ``format`` is one of ``FORMATS`` (detected with :func:`detect_format` when
    None). ``task`` decides NER vs classification for JSONL/CSV (inferred from
    the fields present when None; a text-only file gives unlabelled examples);
    conll/bio are always NER and trec/sst always classification, and a
    contradicting ``task`` is an error. Spans are character offsets into
    ``Example.text``, end-exclusive. See the module docstring for item ids.

    Raises:
        ConfigError: unknown ``format`` or ``task``.
        DataFormatError: malformed input (message names file and line).
        EmptyInputError: empty file or no examples.
    """
    p = Path(path)
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    try:
        kind = None if task is None else TaskKind(task)
    except ValueError:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(t.value for t in TaskKind)}") from None
    data = _read_bytes(p, max_bytes=max_bytes, follow_symlinks=follow_symlinks)
    fmt = _detect(p, data) if format is None else format
    if fmt in NER_FORMATS and kind is TaskKind.CLASSIFICATION:
        raise DataFormatError(f"format {fmt!r} holds NER data; it cannot be read for task 'classification'", str(p))
    if fmt in CLASSIFICATION_FORMATS and kind is TaskKind.NER:
        raise DataFormatError(f"format {fmt!r} holds classification data; it cannot be read for task 'ner'", str(p))

    text = _decode(p, data)
    ctx = _Ctx(str(p), item_id_prefix(p))
    if fmt in NER_FORMATS:
        examples = _read_tokens(ctx, text, fmt)
    elif fmt == "trec":
        examples = _read_trec(ctx, text, trec_fine)
    elif fmt == "sst":
        examples = _read_sst(ctx, text)
    else:
        fields = _Fields(text_field, label_field, id_field, spans_field)
        examples = _read_jsonl(ctx, text, kind, fields) if fmt == "jsonl" else _read_csv(ctx, text, kind, fields)
    if not examples:
        raise EmptyInputError("no examples found in the file", str(p))
    if ctx.repaired:
        logger.warning(
            "%s: repaired %d malformed BIO tag(s) (I-X without a preceding B-X/I-X became B-X; first at line %d)",
            p, ctx.repaired, ctx.first_repair_line,
        )
    return examples


def dedupe_examples(examples: Iterable[Example]) -> tuple[list[Example], list[ItemId]]:
    """Drop examples whose text equals (exactly, character for character) an earlier one's.

    Keeps the first occurrence (its labels win) and order. Returns the kept
    examples and the item ids of the dropped ones, in input order.
    """
    seen: set[str] = set()
    kept: list[Example] = []
    dropped: list[ItemId] = []
    for ex in examples:
        if ex.text in seen:
            dropped.append(ex.item_id)
        else:
            seen.add(ex.text)
            kept.append(ex)
    return kept, dropped


# --------------------------------------------------------------------------- file access


def open_data_file(p: Path, max_bytes: int | None = None, follow_symlinks: bool = True) -> tuple[int, int]:
    """``(fd, size)`` of exactly ``p`` opened for reading: regular files only, non-empty, at most ``max_bytes``.

    Opened non-blocking, so a FIFO is refused instead of blocking; a file with no size (procfs)
    is empty; a file over ``max_bytes`` is refused before it is read. The caller closes ``fd``.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise DataFormatError("file not found", str(p)) from None
    except OSError as exc:
        reason = "is a symbolic link" if not follow_symlinks and p.is_symlink() else \
            f"cannot read the file: {exc.strerror or type(exc).__name__}"
        raise DataFormatError(reason, str(p)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise DataFormatError("is a directory, not a file", str(p))
        if not stat.S_ISREG(st.st_mode):
            raise DataFormatError("is not a regular file (a pipe, socket or device is never read)", str(p))
        if st.st_size == 0:
            raise EmptyInputError("file is empty", str(p))
        if max_bytes is not None and st.st_size > max_bytes:
            raise DataFormatError(f"file is larger than the limit of {max_bytes} bytes", str(p))
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _read_bytes(p: Path, limit: int = -1, max_bytes: int | None = None, follow_symlinks: bool = True) -> bytes:
    """The file's bytes (the first ``limit`` when >= 0): one open of exactly ``p`` (``open_data_file``)."""
    fd, _ = open_data_file(p, max_bytes, follow_symlinks)
    try:
        with open(fd, "rb", closefd=False) as fh:
            data = fh.read(limit if limit >= 0 else (max_bytes + 1 if max_bytes is not None else -1))
    except OSError as exc:
        raise DataFormatError(f"cannot read the file: {exc.strerror or type(exc).__name__}", str(p)) from None
    finally:
        os.close(fd)
    if max_bytes is not None and limit < 0 and len(data) > max_bytes:
        raise DataFormatError(f"file is larger than the limit of {max_bytes} bytes", str(p))
    return data


def _decode(p: Path, data: bytes) -> str:
    """The bytes as text (UTF-8, an optional BOM removed); DataFormatError at the first invalid byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        breaks = list(re.finditer(rb"\r\n|\r|\n", before))
        line = len(breaks) + 1
        column = exc.start - (breaks[-1].end() if breaks else 0) + 1
        raise DataFormatError(
            f"not valid UTF-8 at byte column {column}; re-encode the file as UTF-8 (e.g. iconv -f ISO-8859-1 -t UTF-8)",
            str(p),
            line,
        ) from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise EmptyInputError("file is empty", str(p))
    return text


class _Ctx:
    """Per-file reading state: path for messages, id prefix, ids seen, BIO repairs."""

    def __init__(self, path: str, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        self.ids: dict[str, int] = {}  # item id -> its line (>= 1), or -1 - its record index (JSON arrays)
        self.repaired = 0
        self.first_repair_line = 0

    def error(self, message: str, line: int | None, record: int | None = None) -> DataFormatError:
        if line is None and record is not None:
            message = f"record {record}: {message}"
        return DataFormatError(message, self.path, line)

    def item_id(self, explicit: str | None, index: int, line: int | None, record: int | None = None) -> ItemId:
        iid = explicit if explicit else f"{self.prefix}:{index}"
        first = self.ids.get(iid)
        if first is not None:
            where = f"line {first}" if first > 0 else f"record {-1 - first}"
            raise self.error(f"duplicate item id (first seen at {where})", line, record)
        self.ids[iid] = line if line is not None else -1 - (record or 0)
        return ItemId(iid)

    def note_repairs(self, count: int, line: int | None) -> None:
        if count and not self.repaired:
            self.first_repair_line = line or 0
        self.repaired += count


def _split_columns(line: str) -> list[str]:
    """Columns of a token line: tab-separated when it has a tab (cells stripped), else whitespace-separated."""
    if "\t" in line:
        return [c.strip() for c in line.split("\t")]
    return line.split()


def _sniff_tokens(lines: Sequence[str]) -> str | None:
    """'conll'/'bio' when the lines look like one-token-per-line BIO data, else None."""
    rows: list[list[str]] = []
    docstart: list[str] | None = None
    for ln in lines[:_SNIFF_LINES]:
        cols = _split_columns(ln.strip())
        if cols[0] == _DOCSTART:
            docstart = cols
        else:
            rows.append(cols)
    if rows:
        n = len(rows[0])
        same = [r for r in rows if len(r) == n]
        if n >= 2 and len(same) >= 0.9 * len(rows):
            last_ok = sum(is_bio_tag(r[-1]) for r in same)
            first_ok = sum(is_bio_tag(r[0]) for r in same) if n == 2 else 0
            if max(last_ok, first_ok) >= 0.9 * len(same):
                return "conll" if n > 2 else "bio"
    if docstart is not None:
        n = len(rows[0]) if rows else len(docstart)
        return "conll" if n > 2 else "bio"
    return None


# --------------------------------------------------------------------------- token formats


def _read_tokens(ctx: _Ctx, text: str, fmt: str) -> list[Example]:
    sentences: list[list[tuple[int, list[str]]]] = []
    current: list[tuple[int, list[str]]] = []
    expected: int | None = 2 if fmt == "bio" else None
    for lineno, raw in enumerate(_LINE_BREAK.split(text), 1):
        line = raw.rstrip()
        cols = _split_columns(line) if line.strip() else []
        if not cols or cols[0] == _DOCSTART:
            if current:
                sentences.append(current)
                current = []
            continue
        if expected is None:
            if len(cols) < 2:
                raise ctx.error(f"expected at least 2 columns (TOKEN ... TAG), found {len(cols)}", lineno)
            expected = len(cols)
        if len(cols) != expected:
            hint = "; use format 'conll' for more columns" if fmt == "bio" and len(cols) > 2 else ""
            raise ctx.error(f"expected {expected} columns, found {len(cols)}{hint}", lineno)
        if not all(cols):
            raise ctx.error(f"column {cols.index('') + 1} is empty", lineno)
        current.append((lineno, cols))
    if current:
        sentences.append(current)
    if not sentences:
        return []

    n_cols = expected or 2
    tag_col = n_cols - 1
    token_col = 0
    rows = [row for sent in sentences for row in sent]
    if fmt == "bio":
        ok = [sum(is_bio_tag(cols[c]) for _, cols in rows) for c in (0, 1)]
        if ok[1] >= ok[0]:  # ties (both columns look like tags) go to the last column
            tag_col, token_col = 1, 0
        else:
            tag_col, token_col = 0, 1
    for lineno, cols in rows:
        if not is_bio_tag(cols[tag_col]):
            raise ctx.error(
                f"invalid tag in column {tag_col + 1} (expected O, B-X or I-X)", lineno
            )

    examples: list[Example] = []
    for index, sent in enumerate(sentences):
        tokens = [cols[token_col] for _, cols in sent]
        raw_tags = [cols[tag_col] for _, cols in sent]
        tags, repaired = repair_bio(raw_tags)
        if repaired:
            first = next(i for i, (a, b) in enumerate(zip(raw_tags, tags)) if a != b)
            ctx.note_repairs(repaired, sent[first][0])
        sent_text, offsets = tokens_to_text(tokens)
        spans = tuple(word_tags_to_spans(offsets, tags))
        examples.append(
            Example(ctx.item_id(None, index, sent[0][0]), sent_text, spans=spans, meta={"source_line": sent[0][0]})
        )
    return examples


# --------------------------------------------------------------------------- line classification formats


def _numbered(text: str) -> Iterable[tuple[int, str]]:
    return enumerate(_LINE_BREAK.split(text), 1)


def _label_lines(ctx: _Ctx, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str, str]]:
    """(line number, first field, rest stripped) for each non-blank line; DataFormatError for an empty rest."""
    for lineno, raw in lines:
        line = raw.strip()
        if not line:
            continue
        parts = line.split(None, 1)
        rest = parts[1].strip() if len(parts) > 1 else ""
        if not rest:
            raise ctx.error(f"empty text after the label (column {len(parts[0]) + 1})", lineno)
        yield lineno, parts[0], rest


def iter_trec(ctx: _Ctx, lines: Iterable[tuple[int, str]], fine: bool) -> Iterator[Example]:
    for index, (lineno, label, rest) in enumerate(_label_lines(ctx, lines)):
        m = _TREC_LABEL.match(label)
        if m is None:
            raise ctx.error("expected a COARSE:fine label such as 'DESC:manner' in column 1", lineno)
        lb = label if fine else m.group(1)
        meta: dict[str, object] = {"source_line": lineno, "fine_label": label}
        yield Example(ctx.item_id(None, index, lineno), rest, labels=(lb,), meta=meta)


def iter_sst(ctx: _Ctx, lines: Iterable[tuple[int, str]]) -> Iterator[Example]:
    for index, (lineno, label, rest) in enumerate(_label_lines(ctx, lines)):
        if not _SST_LABEL.match(label):
            raise ctx.error("expected an integer label such as 0 or 1 in column 1, before the text", lineno)
        meta: dict[str, object] = {"source_line": lineno}
        yield Example(ctx.item_id(None, index, lineno), rest, labels=(label,), meta=meta)


def _read_trec(ctx: _Ctx, text: str, fine: bool) -> list[Example]:
    return list(iter_trec(ctx, _numbered(text), fine))


def _read_sst(ctx: _Ctx, text: str) -> list[Example]:
    return list(iter_sst(ctx, _numbered(text)))


# --------------------------------------------------------------------------- JSONL / CSV


class _Fields:
    def __init__(self, text: str, label: str, id_: str, spans: str) -> None:
        self.text = text
        self.label = label
        self.id = id_
        self.spans = spans


class _Rec:
    """One JSONL record or CSV row with where it came from."""

    def __init__(self, data: dict[str, Any], line: int | None, record: int) -> None:
        self.data = data
        self.line = line
        self.record = record


def jsonl_records(ctx: _Ctx, lines: Iterable[tuple[int, str]]) -> Iterator[_Rec]:
    """One record per non-blank JSON-lines line (a JSON object)."""
    index = 0
    for lineno, raw in lines:
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ctx.error(f"bad JSON: {exc.msg} (column {exc.colno})", lineno) from None
        if not isinstance(item, dict):
            raise ctx.error(f"expected one JSON object per line, found {type(item).__name__}", lineno)
        yield _Rec(item, lineno, index)
        index += 1


def jsonl_kinds(recs: Iterable[_Rec], f: _Fields) -> tuple[bool, bool]:
    """(any record has NER fields, any has a classification label)."""
    has_ner = has_cls = False
    for r in recs:
        d = r.data
        has_ner = has_ner or d.get(f.spans) is not None or "tokens" in d
        has_cls = has_cls or d.get(f.label) is not None
    return has_ner, has_cls


def _read_jsonl(ctx: _Ctx, text: str, kind: TaskKind | None, f: _Fields) -> list[Example]:
    recs: list[_Rec] = []
    if text.lstrip()[:1] == "[":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ctx.error(f"bad JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
        if not isinstance(items, list):
            raise ctx.error("expected a JSON array of objects", 1)
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ctx.error(f"expected a JSON object, found {type(item).__name__}", None, i)
            recs.append(_Rec(item, None, i))
    else:
        recs = list(jsonl_records(ctx, _numbered(text)))
    kind = _decide_task(ctx, kind, *jsonl_kinds(recs, f), f)
    return [jsonl_example(ctx, r, kind, f) for r in recs]


def jsonl_example(ctx: _Ctx, r: _Rec, kind: TaskKind | None, f: _Fields) -> Example:
    """The example of one JSONL record (``r.record`` is its 0-based index in the file)."""
    d = r.data
    used = {f.id}
    iid = ctx.item_id(_explicit_id(ctx, d.get(f.id), r), r.record, r.line, r.record)
    spans: tuple[Span, ...] | None = None
    labels: tuple[str, ...] | None = None
    if kind is TaskKind.NER and "tokens" in d:
        used |= {"tokens", "tags", f.text}
        text_value, spans = _tokens_record(ctx, d, r, f)
    else:
        used.add(f.text)
        text_value = _text_value(ctx, d.get(f.text, _MISSING), r, f.text)
        if kind is TaskKind.NER:
            used.add(f.spans)
            if d.get(f.spans) is not None:
                spans = _parse_spans(ctx, text_value, d[f.spans], r)
        elif kind is TaskKind.CLASSIFICATION:
            used.add(f.label)
            if d.get(f.label) is not None:
                labels = _json_labels(ctx, d[f.label], r, f.label)
    meta: dict[str, object] = {k: v for k, v in d.items() if k not in used}
    if r.line is not None:
        meta["source_line"] = r.line
    return Example(iid, text_value, spans=spans, labels=labels, meta=meta)


def _read_csv(ctx: _Ctx, text: str, kind: TaskKind | None, f: _Fields) -> list[Example]:
    return list(iter_csv(ctx, io.StringIO(text, newline=""), kind, f))


def iter_csv(ctx: _Ctx, lines: Iterable[str], kind: TaskKind | None, f: _Fields) -> Iterator[Example]:
    """The examples of CSV ``lines`` (each with its line break, as ``open(newline="")`` gives them)."""
    reader = csv.reader(lines)
    header: list[str] | None = None
    last_line = 0
    index = 0
    try:
        for row in reader:
            start = last_line + 1
            last_line = reader.line_num
            if not row or not any(c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip() for c in row]
                kind = _check_header(ctx, header, start, kind, f)
                continue
            yield _csv_example(ctx, header, start, row, index, kind, f)
            index += 1
    except csv.Error as exc:
        raise ctx.error(f"bad CSV: {exc}", reader.line_num) from None


def _check_header(ctx: _Ctx, header: list[str], header_line: int, kind: TaskKind | None,
                  f: _Fields) -> TaskKind | None:
    if len(set(header)) != len(header):
        dup = next(i for i, name in enumerate(header) if name in header[:i])
        raise ctx.error(f"duplicate column name in the header: field {dup + 1} repeats field "
                        f"{header.index(header[dup]) + 1}", header_line)
    if f.text not in header:
        raise ctx.error(
            f"missing text column {f.text!r} in the header ({len(header)} fields; set the text field)",
            header_line,
        )
    return _decide_task(ctx, kind, f.spans in header, f.label in header, f)


def _csv_example(ctx: _Ctx, header: list[str], lineno: int, row: list[str], index: int, kind: TaskKind | None,
                 f: _Fields) -> Example:
    if len(row) != len(header):
        raise ctx.error(f"expected {len(header)} fields as in the header, found {len(row)}", lineno)
    d = dict(zip(header, row))
    r = _Rec(d, lineno, index)
    iid = ctx.item_id(d.get(f.id, "").strip() or None, index, lineno)
    text_value = _text_value(ctx, d[f.text], r, f.text)
    spans: tuple[Span, ...] | None = None
    labels: tuple[str, ...] | None = None
    used = {f.id, f.text}
    if kind is TaskKind.NER and f.spans in d:
        used.add(f.spans)
        cell = d[f.spans].strip()
        if cell:
            try:
                value = json.loads(cell)
            except json.JSONDecodeError as exc:
                raise ctx.error(f"bad JSON in column {f.spans!r}: {exc.msg}", lineno) from None
            spans = _parse_spans(ctx, text_value, value, r)
    elif kind is TaskKind.CLASSIFICATION and f.label in d:
        used.add(f.label)
        cell = d[f.label].strip()
        if cell:
            parts = [p.strip() for p in cell.split("|")]
            if not all(parts):
                raise ctx.error(f"empty label in column {f.label!r} (field {header.index(f.label) + 1}; "
                                "multi-label cells are 'a|b')", lineno)
            labels = tuple(parts)
    meta: dict[str, object] = {k: v for k, v in d.items() if k not in used}
    meta["source_line"] = lineno
    return Example(iid, text_value, spans=spans, labels=labels, meta=meta)


def _decide_task(ctx: _Ctx, kind: TaskKind | None, has_ner: bool, has_cls: bool, f: _Fields) -> TaskKind | None:
    ner_desc = f"NER fields ({f.spans!r} or tokens/tags)"
    cls_desc = f"classification labels ({f.label!r})"
    if kind is None:
        if has_ner and has_cls:
            raise ctx.error(f"the file has both {ner_desc} and {cls_desc}; pass the task (ner or classification)", None)
        if has_ner:
            return TaskKind.NER
        return TaskKind.CLASSIFICATION if has_cls else None
    if kind is TaskKind.NER and has_cls and not has_ner:
        raise ctx.error(f"task is ner but the file has only {cls_desc}", None)
    if kind is TaskKind.CLASSIFICATION and has_ner and not has_cls:
        raise ctx.error(f"task is classification but the file has only {ner_desc}", None)
    return kind


_MISSING = object()


def _text_value(ctx: _Ctx, value: object, r: _Rec, field: str) -> str:
    if value is _MISSING:
        raise ctx.error(f"missing text field {field!r}", r.line, r.record)
    if not isinstance(value, str):
        raise ctx.error(f"text field {field!r} must be a string, found {type(value).__name__}", r.line, r.record)
    if not value.strip():
        raise ctx.error(f"empty text in field {field!r}", r.line, r.record)
    return value


def _explicit_id(ctx: _Ctx, value: object, r: _Rec) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ctx.error(f"item id must be a string or an integer, found {type(value).__name__}", r.line, r.record)
    return str(value).strip() or None


def _json_labels(ctx: _Ctx, value: object, r: _Rec, field: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    out: list[str] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise ctx.error(f"label in {field!r} must be a string or an integer, found {type(v).__name__}", r.line,
                            r.record)
        s = str(v).strip()
        if not s:
            raise ctx.error(f"empty label in {field!r}", r.line, r.record)
        out.append(s)
    return tuple(out)


def _parse_spans(ctx: _Ctx, text: str, value: object, r: _Rec) -> tuple[Span, ...]:
    """Spans from JSON (list of {start, end, label} objects or [start, end, label] lists), validated and trimmed."""
    if not isinstance(value, list):
        raise ctx.error(f"spans must be a list, found {type(value).__name__}", r.line, r.record)
    spans: list[Span] = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            label = item.get("label")
            if label is None and isinstance(item.get("labels"), list) and len(item["labels"]) == 1:
                label = item["labels"][0]
            start, end = item.get("start"), item.get("end")
        elif isinstance(item, list) and len(item) == 3:
            start, end, label = item
        else:
            raise ctx.error(f"span {i} must be {{'start', 'end', 'label'}} or [start, end, label]", r.line, r.record)
        if isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int):
            raise ctx.error(f"span {i}: start and end must be integers, found {type(start).__name__}, "
                            f"{type(end).__name__}", r.line, r.record)
        if not isinstance(label, str):
            raise ctx.error(f"span {i}: label must be a string, found {type(label).__name__}", r.line, r.record)
        span = Span(start, end, label.strip())
        problem = _span_problem(text, span)
        if problem:
            raise ctx.error(f"span {i} {problem}", r.line, r.record)
        spans.append(span)
    try:
        return check_spans(text, spans)
    except AlignmentError:  # its message quotes labels: file content
        raise ctx.error("spans overlap", r.line, r.record) from None


def _span_problem(text: str, span: Span) -> str | None:
    """What is wrong with one span, in words that quote nothing of the file (None: it fits the text)."""
    if not span.label:
        return "has an empty label"
    if span.start < 0:
        return "starts before the text (start < 0)"
    if span.end > len(text):
        return f"ends after the text (end > text length {len(text)})"
    if span.start >= span.end:
        return "is empty or inverted (start >= end)"
    return None if text[span.start:span.end].strip() else "covers only whitespace"


def _tokens_record(ctx: _Ctx, d: dict[str, Any], r: _Rec, f: _Fields) -> tuple[str, tuple[Span, ...] | None]:
    tokens = d["tokens"]
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t.strip() for t in tokens):
        raise ctx.error("'tokens' must be a list of non-empty strings", r.line, r.record)
    if not tokens:
        raise ctx.error("empty text ('tokens' is an empty list)", r.line, r.record)
    try:
        if isinstance(d.get(f.text), str):
            text = _text_value(ctx, d[f.text], r, f.text)
            offsets = locate_tokens(text, tokens)
        else:
            text, offsets = tokens_to_text(tokens)
    except AlignmentError as exc:
        position = re.search(r"token \d+|character \d+", str(exc))
        where = f" ({position.group(0)})" if position else ""
        raise ctx.error(f"tokens do not match the text{where}", r.line, r.record) from None
    tags = d.get("tags")
    if tags is None:
        return text, None
    if not isinstance(tags, list) or len(tags) != len(tokens):
        raise ctx.error(f"'tags' must be a list with one tag per token ({len(tokens)})", r.line, r.record)
    for i, t in enumerate(tags):
        if not isinstance(t, str) or not is_bio_tag(t):
            raise ctx.error(f"invalid tag at token {i} (expected O, B-X or I-X)", r.line, r.record)
    fixed, repaired = repair_bio(tags)
    ctx.note_repairs(repaired, r.line)
    return text, tuple(word_tags_to_spans(offsets, fixed))
