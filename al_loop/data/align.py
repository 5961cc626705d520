"""Span <-> word <-> subword alignment (pure Python, no torch).

Units and id spaces used throughout this module:

- **Character offsets** are Python ``str`` indices (Unicode code points) into
  the text; every ``(start, end)`` pair and every :class:`~al_loop.types.Span`
  is end-exclusive: ``text[start:end]``.
- **Words** are the units a model labels (one BIO tag per word). They come from
  :func:`words_of`: the regex ``\\w+|[^\\w\\s]`` (runs of word characters, or a
  single punctuation/symbol character), split further at requested character
  boundaries. Word indices are positions in the list :func:`words_of` returns
  for one text; they never leave the caller that computed them.
- **Token offsets** are what a Hugging Face fast tokenizer returns with
  ``return_offsets_mapping=True`` (character offsets into the same text).
  Special tokens (CLS, SEP, PAD) have ``(0, 0)``; any empty ``(s, s)`` token is
  treated the same way.
- **Label ids** are indices into ``LabelSchema.tags``; ``ignore_index`` (default
  ``-100``, PyTorch's cross-entropy default) marks positions without a label.

Malformed BIO (``I-X`` that does not follow ``B-X``/``I-X`` of the same type) is
repaired to ``B-X`` — the conlleval convention — by :func:`repair_bio` and
:func:`word_tags_to_spans`.
"""

from __future__ import annotations

import numbers
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise

from al_loop.data.schema import OUTSIDE, LabelSchema
from al_loop.errors import AlignmentError
from al_loop.types import Span

Offsets = list[tuple[int, int]]
"""Character ``(start, end)`` pairs, end-exclusive."""

WORD_RE = re.compile(r"\w+|[^\w\s]")
"""One word: a run of word characters, or one character that is neither word nor space."""

_TAG_RE = re.compile(r"(?:O|[BI]-\S+)\Z")


@lru_cache(maxsize=4096)
def is_bio_tag(tag: str) -> bool:
    """True for ``O``, ``B-X`` and ``I-X`` (X non-empty, without whitespace)."""
    return bool(_TAG_RE.match(tag))


def words_of(text: str, boundaries: Iterable[int] = ()) -> Offsets:
    """Split ``text`` into words and return their character offsets (end-exclusive).

    Words are the matches of ``\\w+|[^\\w\\s]``; a match is additionally cut at
    every offset in ``boundaries`` that falls strictly inside it, so a span whose
    start or end lies inside a regex word (``"Berlin|er"``) still starts/ends on
    a word boundary. Boundaries outside the text or on whitespace change nothing.
    Every non-whitespace character belongs to exactly one word; an empty or
    whitespace-only text has no words.
    """
    cuts = sorted(set(boundaries))
    words: Offsets = []
    for m in WORD_RE.finditer(text):
        start, end = m.start(), m.end()
        if end - start > 1 and cuts:
            i = bisect_right(cuts, start)
            while i < len(cuts) and cuts[i] < end:
                words.append((start, cuts[i]))
                start = cuts[i]
                i += 1
        words.append((start, end))
    return words


def check_spans(text: str, spans: Iterable[Span], schema: LabelSchema | None = None) -> tuple[Span, ...]:
    """Validate spans against ``text`` and return them trimmed and sorted by (start, end).

    Offsets are character offsets into ``text``, end-exclusive. Leading and
    trailing whitespace inside a span is trimmed (``" Paris "`` becomes
    ``"Paris"``), so the returned spans may differ from the input ones.

    Raises:
        AlignmentError: naming the span, when ``start < 0``, ``end > len(text)``,
            ``start >= end``, the span covers only whitespace, its label is empty,
            or two spans overlap (after trimming; touching spans are fine).
        UnknownLabelError: when ``schema`` is given and a label is not in it.
    """
    out: list[Span] = []
    n = len(text)
    for span in spans:
        start, end, label = span.start, span.end, span.label
        if not isinstance(label, str) or not label.strip():
            raise AlignmentError(f"span {_fmt(span)} has an empty label")
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (start, end)):
            raise AlignmentError(f"span {_fmt(span)}: start and end must be integers")
        start, end = int(start), int(end)
        if start < 0:
            raise AlignmentError(f"span {_fmt(span)} starts before the text (start < 0)")
        if end > n:
            raise AlignmentError(f"span {_fmt(span)} ends after the text (end > text length {n})")
        if start >= end:
            raise AlignmentError(f"span {_fmt(span)} is empty or inverted (start >= end)")
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start == end:
            raise AlignmentError(f"span {_fmt(span)} covers only whitespace")
        if schema is not None:
            schema.check_label(label)
        same = (start, end) == (span.start, span.end) and type(span.start) is int and type(span.end) is int
        out.append(span if same else Span(start, end, label))
    out.sort()
    for prev, cur in pairwise(out):
        if cur.start < prev.end:
            raise AlignmentError(f"spans {_fmt(prev)} and {_fmt(cur)} overlap")
    return tuple(out)


def _fmt(span: Span) -> str:
    return f"[{span.start}, {span.end}) {span.label!r}"


def spans_to_word_tags(words: Offsets, spans: Sequence[Span]) -> list[str]:
    """BIO tag per word: ``B-X`` on the first word of a span of type X, ``I-X`` on the rest, ``O`` elsewhere.

    ``words`` and ``spans`` are character offsets (end-exclusive) into the same
    text; spans must not overlap (see :func:`check_spans`). A word belongs to a
    span when they share at least one character, so a span that is not aligned to
    word boundaries grows to whole words (compute ``words`` with
    ``words_of(text, boundaries)`` to avoid that). A word touched by two spans
    keeps the first one.
    """
    tags = [OUTSIDE] * len(words)
    if not words:
        return tags
    ends = [e for _, e in words]
    for span in sorted(spans):
        i = bisect_right(ends, span.start)  # first word ending after span.start
        first = True
        while i < len(words) and words[i][0] < span.end:
            if tags[i] == OUTSIDE and words[i][1] > words[i][0]:
                tags[i] = ("B-" if first else "I-") + span.label
                first = False
            i += 1
    return tags


def repair_bio(tags: Sequence[str]) -> tuple[list[str], int]:
    """Return ``tags`` with malformed ``I-X`` turned into ``B-X``, and how many were changed.

    ``I-X`` is malformed when the previous tag is neither ``B-X`` nor ``I-X``
    (start of sequence, after ``O``, or after another type). This is the
    conlleval convention and also converts IOB1 to IOB2.

    Raises:
        AlignmentError: for a tag that is not ``O``, ``B-X`` or ``I-X``.
    """
    out: list[str] = []
    repaired = 0
    prev_type: str | None = None
    for i, tag in enumerate(tags):
        if not is_bio_tag(tag):
            raise AlignmentError(f"invalid BIO tag {tag!r} at position {i} (expected O, B-X or I-X)")
        if tag == OUTSIDE:
            prev_type = None
        elif tag[0] == "B":
            prev_type = tag[2:]
        else:
            if prev_type != tag[2:]:
                tag = "B-" + tag[2:]
                repaired += 1
            prev_type = tag[2:]
        out.append(tag)
    return out, repaired


def word_tags_to_spans(words: Offsets, tags: Sequence[str]) -> list[Span]:
    """Character spans (end-exclusive, sorted) from one BIO tag per word.

    A span runs from the start of its ``B-X`` word to the end of its last
    ``I-X`` word. Malformed ``I-X`` starts a new span (see :func:`repair_bio`).
    For valid non-overlapping spans aligned to word boundaries,
    ``word_tags_to_spans(words, spans_to_word_tags(words, spans)) == sorted(spans)``.

    Raises:
        AlignmentError: when ``len(tags) != len(words)`` or a tag is not BIO.
    """
    if len(tags) != len(words):
        raise AlignmentError(f"{len(tags)} tags for {len(words)} words")
    spans: list[Span] = []
    cur_start = cur_end = -1
    cur_label: str | None = None
    for i, ((ws, we), tag) in enumerate(zip(words, tags)):
        if tag == OUTSIDE:
            if cur_label is not None:
                spans.append(Span(cur_start, cur_end, cur_label))
                cur_label = None
            continue
        if not is_bio_tag(tag):
            raise AlignmentError(f"invalid BIO tag {tag!r} at position {i} (expected O, B-X or I-X)")
        if tag[0] == "I" and cur_label == tag[2:]:
            cur_end = we
            continue
        if cur_label is not None:  # B-X, or a malformed I-X that starts a new span
            spans.append(Span(cur_start, cur_end, cur_label))
        cur_start, cur_end, cur_label = ws, we, tag[2:]
    if cur_label is not None:
        spans.append(Span(cur_start, cur_end, cur_label))
    return spans


def tokens_to_text(tokens: Sequence[str]) -> tuple[str, Offsets]:
    """Join tokens with single spaces; return the text and each token's character offsets (end-exclusive).

    Raises:
        AlignmentError: for an empty token (it would have no characters to label).
    """
    offsets: Offsets = []
    pos = 0
    for i, tok in enumerate(tokens):
        if not tok:
            raise AlignmentError(f"token {i} is empty")
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return " ".join(tokens), offsets


def word_to_first_token(token_offsets: Offsets, words: Offsets) -> list[int]:
    """For each word, the index of its first subword token, or -1 when no token starts in it.

    A token belongs to the word that contains its start offset; a token that
    starts on whitespace (some tokenizers keep the leading space) belongs to the
    first word that begins inside it. Empty tokens (specials, ``(0, 0)``) belong
    to no word. A word can be left without a token when the tokenizer does not
    cut where :func:`words_of` does (a boundary inside a subword) or the text was
    truncated; callers must handle ``-1``.
    """
    first = [-1] * len(words)
    if not words:
        return first
    starts = [s for s, _ in words]
    for t, (ts, te) in enumerate(token_offsets):
        if te <= ts:
            continue
        w = bisect_right(starts, ts) - 1
        if w < 0 or ts >= words[w][1]:
            w = bisect_left(starts, ts)
            if w >= len(words) or starts[w] >= te:
                continue
        if first[w] == -1:
            first[w] = t
    return first


def token_to_word(token_offsets: Offsets, words: Offsets) -> list[int]:
    """For each token, the index of the word it is the FIRST subword of, else -1.

    Specials (``(0, 0)``), continuation subwords and tokens over whitespace get -1.
    See :func:`word_to_first_token` for how a token is assigned to a word.
    """
    out = [-1] * len(token_offsets)
    for w, t in enumerate(word_to_first_token(token_offsets, words)):
        if t >= 0:
            out[t] = w
    return out


def first_subword_labels(
    token_offsets: Offsets, words: Offsets, word_label_ids: Sequence[int], ignore_index: int = -100
) -> list[int]:
    """Label id per token: the word's label id on its first subword, ``ignore_index`` elsewhere.

    ``word_label_ids[i]`` is the label id (index into ``LabelSchema.tags``) of
    ``words[i]``. Special tokens, continuation subwords and tokens over
    whitespace get ``ignore_index``.

    Raises:
        AlignmentError: when ``len(word_label_ids) != len(words)``.
    """
    if len(word_label_ids) != len(words):
        raise AlignmentError(f"{len(word_label_ids)} label ids for {len(words)} words")
    return [word_label_ids[w] if w >= 0 else ignore_index for w in token_to_word(token_offsets, words)]


def locate_tokens(text: str, tokens: Sequence[str]) -> Offsets:
    """Character offsets (end-exclusive) of ``tokens`` found in order in ``text``.

    Only whitespace may lie between consecutive tokens (or nothing, as in
    ``"do" "n't"``); leading/trailing whitespace of the text is allowed.

    Raises:
        AlignmentError: naming the first token that cannot be placed.
    """
    offsets: Offsets = []
    pos = 0
    for i, tok in enumerate(tokens):
        if not tok:
            raise AlignmentError(f"token {i} is empty")
        found = text.find(tok, pos)
        if found < 0 or text[pos:found].strip():
            raise AlignmentError(f"token {i} {tok!r} not found in the text after character {pos}")
        offsets.append((found, found + len(tok)))
        pos = found + len(tok)
    if text[pos:].strip():
        raise AlignmentError(f"text has characters after the last token (from character {pos})")
    return offsets
