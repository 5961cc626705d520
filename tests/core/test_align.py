from __future__ import annotations

import random
from itertools import pairwise

import pytest

from al_loop.data.align import (
    check_spans,
    first_subword_labels,
    is_bio_tag,
    locate_tokens,
    repair_bio,
    spans_to_word_tags,
    token_to_word,
    tokens_to_text,
    word_tags_to_spans,
    word_to_first_token,
    words_of,
)
from al_loop.data.schema import LabelSchema
from al_loop.errors import AlignmentError, UnknownLabelError
from al_loop.types import Span, TaskKind

# ----------------------------------------------------------------------------- words_of


def _texts(text: str, offsets: list[tuple[int, int]]) -> list[str]:
    return [text[s:e] for s, e in offsets]


def test_words_of_splits_words_and_punctuation() -> None:
    text = "Hello, world!  It's 3.5\tkm."
    assert _texts(text, words_of(text)) == ["Hello", ",", "world", "!", "It", "'", "s", "3", ".", "5", "km", "."]


def test_words_of_offsets_are_end_exclusive_char_offsets() -> None:
    text = "  a bb  "
    assert words_of(text) == [(2, 3), (4, 6)]


def test_words_of_empty_and_whitespace_text() -> None:
    assert words_of("") == []
    assert words_of(" \t\n  ") == []


def test_words_of_unicode() -> None:
    text = "Café Zürich 東京タワー 👍🏽 naïve"
    assert _texts(text, words_of(text)) == ["Café", "Zürich", "東京タワー", "👍", "🏽", "naïve"]


def test_words_of_splits_at_boundaries_inside_words() -> None:
    text = "Berliner Mauer"
    assert _texts(text, words_of(text, [6])) == ["Berlin", "er", "Mauer"]
    # boundaries at word edges, on whitespace or outside the text change nothing
    assert words_of(text, [0, 8, 9, 14, -3, 99]) == words_of(text)
    assert _texts(text, words_of(text, [2, 4, 6])) == ["Be", "rl", "in", "er", "Mauer"]


def test_words_of_covers_every_non_space_character() -> None:
    rng = random.Random(3)
    text = _random_text(rng, 300)
    words = words_of(text, rng.sample(range(len(text) + 1), 40))
    covered = {i for s, e in words for i in range(s, e)}
    assert covered == {i for i, ch in enumerate(text) if not ch.isspace()}
    assert all(s < e for s, e in words)
    assert all(a[1] <= b[0] for a, b in pairwise(words))


# ----------------------------------------------------------------------------- check_spans


def test_check_spans_sorts_and_trims() -> None:
    text = "Angela Merkel visited  Paris ."
    spans = [Span(22, 29, "LOC"), Span(0, 13, "PER")]
    out = check_spans(text, spans)
    assert out == (Span(0, 13, "PER"), Span(23, 28, "LOC"))
    assert [text[s.start : s.end] for s in out] == ["Angela Merkel", "Paris"]


def test_check_spans_empty_input() -> None:
    assert check_spans("", []) == ()
    assert check_spans("abc", ()) == ()


@pytest.mark.parametrize(
    ("span", "message"),
    [
        (Span(-1, 3, "X"), "start < 0"),
        (Span(0, 99, "X"), "end > text length"),
        (Span(3, 3, "X"), "start >= end"),
        (Span(4, 2, "X"), "start >= end"),
        (Span(5, 8, "X"), "only whitespace"),
        (Span(0, 3, " "), "empty label"),
    ],
)
def test_check_spans_rejects_bad_span(span: Span, message: str) -> None:
    text = "abcde   fgh"
    with pytest.raises(AlignmentError, match=message) as info:
        check_spans(text, [span])
    assert f"[{span.start}, {span.end})" in str(info.value)


def test_check_spans_rejects_overlap_but_allows_touching() -> None:
    text = "New York City"
    assert len(check_spans(text, [Span(0, 3, "A"), Span(3, 8, "B")])) == 2
    with pytest.raises(AlignmentError, match="overlap"):
        check_spans(text, [Span(0, 8, "LOC"), Span(4, 13, "LOC")])
    with pytest.raises(AlignmentError, match="overlap"):
        check_spans(text, [Span(0, 3, "LOC"), Span(0, 3, "LOC")])


def test_check_spans_overlap_detected_after_trimming() -> None:
    # "a " and " a" do not overlap once trimmed
    assert check_spans("a a", [Span(0, 2, "X"), Span(1, 3, "X")]) == (Span(0, 1, "X"), Span(2, 3, "X"))


def test_check_spans_with_schema() -> None:
    schema = LabelSchema.build(TaskKind.NER, ["LOC", "PER"])
    assert check_spans("Paris", [Span(0, 5, "LOC")], schema) == (Span(0, 5, "LOC"),)
    with pytest.raises(UnknownLabelError, match="ORG"):
        check_spans("Paris", [Span(0, 5, "ORG")], schema)


def test_check_spans_rejects_non_integer_offsets() -> None:
    with pytest.raises(AlignmentError, match="integers"):
        check_spans("abc", [Span(0.0, 2, "X")])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- BIO


def test_is_bio_tag() -> None:
    assert all(is_bio_tag(t) for t in ["O", "B-PER", "I-Restaurant_Name", "B-a:b"])
    assert not any(is_bio_tag(t) for t in ["", "o", "B-", "I", "S-PER", "E-X", "B-A B", "PER", "O "])


def test_spans_to_word_tags_and_back() -> None:
    text = "Angela Merkel visited New York ."
    words = words_of(text)
    spans = [Span(0, 13, "PER"), Span(22, 30, "LOC")]
    tags = spans_to_word_tags(words, spans)
    assert tags == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    assert word_tags_to_spans(words, tags) == spans


def test_adjacent_spans_of_same_type_stay_separate() -> None:
    text = "Paris London"
    words = words_of(text)
    spans = [Span(0, 5, "LOC"), Span(6, 12, "LOC")]
    assert spans_to_word_tags(words, spans) == ["B-LOC", "B-LOC"]
    assert word_tags_to_spans(words, ["B-LOC", "B-LOC"]) == spans


def test_unaligned_span_grows_to_whole_words() -> None:
    text = "Berliner Mauer"
    assert spans_to_word_tags(words_of(text), [Span(0, 6, "LOC")]) == ["B-LOC", "O"]
    words = words_of(text, [6])
    assert spans_to_word_tags(words, [Span(0, 6, "LOC")]) == ["B-LOC", "O", "O"]


def test_repair_bio() -> None:
    tags, n = repair_bio(["I-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-LOC", "I-LOC", "B-X", "I-X"])
    assert tags == ["B-PER", "I-PER", "O", "B-LOC", "B-ORG", "B-LOC", "I-LOC", "B-X", "I-X"]
    assert n == 3
    assert repair_bio([]) == ([], 0)
    with pytest.raises(AlignmentError, match="invalid BIO tag"):
        repair_bio(["O", "S-PER"])


def test_word_tags_to_spans_repairs_i_without_b() -> None:
    words = words_of("a b c d")
    assert word_tags_to_spans(words, ["I-X", "I-X", "I-Y", "O"]) == [Span(0, 3, "X"), Span(4, 5, "Y")]


def test_word_tags_to_spans_length_mismatch() -> None:
    with pytest.raises(AlignmentError, match="2 tags for 1 words"):
        word_tags_to_spans([(0, 1)], ["O", "O"])


# ----------------------------------------------------------------------------- round trip property

_PIECES = [
    "word", "Ünïcödé", "café", "東京", "タワー", "😀", "👍🏽", "e\u0301", "x_y", "42", "3.14", "-", ",", ".", "!",
    "«", "»", "(", ")", "'", "don't", "ß", "İstanbul", "Ωμέγα", "عربى", "A", "z",
]
_GAPS = [" ", " ", " ", "  ", "\t", "\n", " \t ", "\u00a0", "", ""]


def _random_text(rng: random.Random, n_pieces: int) -> str:
    out = [rng.choice(_GAPS)]
    for _ in range(n_pieces):
        out.append(rng.choice(_PIECES))
        out.append(rng.choice(_GAPS))
    return "".join(out)


def _random_word_spans(rng: random.Random, words: list[tuple[int, int]], labels: list[str]) -> list[Span]:
    spans: list[Span] = []
    i = 0
    while i < len(words):
        if rng.random() < 0.3:
            j = min(len(words) - 1, i + rng.randrange(4))
            spans.append(Span(words[i][0], words[j][1], rng.choice(labels)))
            i = j + 1
        else:
            i += 1
    rng.shuffle(spans)
    return spans


@pytest.mark.parametrize("seed", range(40))
def test_round_trip_word_aligned_spans(seed: int) -> None:
    rng = random.Random(seed)
    text = _random_text(rng, rng.randrange(0, 60))
    words = words_of(text)
    spans = _random_word_spans(rng, words, ["PER", "LOC", "B", "Restaurant_Name"])
    checked = check_spans(text, spans)
    assert list(checked) == sorted(spans)
    assert word_tags_to_spans(words, spans_to_word_tags(words, spans)) == sorted(spans)


@pytest.mark.parametrize("seed", range(40))
def test_round_trip_arbitrary_spans_with_boundaries(seed: int) -> None:
    """Any valid spans round-trip over words_of(text, their boundaries) — how metrics and training use it."""
    rng = random.Random(1000 + seed)
    text = _random_text(rng, rng.randrange(1, 40))
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randrange(0, 12))))
    raw = [Span(a, b, rng.choice(["X", "Y"])) for a, b in zip(cuts[::2], cuts[1::2]) if text[a:b].strip()]
    spans = check_spans(text, raw)
    words = words_of(text, [b for s in spans for b in (s.start, s.end)])
    assert word_tags_to_spans(words, spans_to_word_tags(words, spans)) == list(spans)


def test_round_trip_empty_text() -> None:
    assert words_of("") == []
    assert spans_to_word_tags([], []) == []
    assert word_tags_to_spans([], []) == []


def test_round_trip_long_text() -> None:
    rng = random.Random(7)
    text = " ".join(rng.choice(["alpha", "Beta", "γάμμα", "中文", ",", "👍"]) for _ in range(10_000))
    words = words_of(text)
    assert len(words) == 10_000
    spans = _random_word_spans(rng, words, ["A", "B"])
    assert len(spans) > 500
    assert word_tags_to_spans(words, spans_to_word_tags(words, spans)) == sorted(spans)


# ----------------------------------------------------------------------------- tokens


def test_tokens_to_text() -> None:
    text, offsets = tokens_to_text(["EU", "rejects", "German", "call", "."])
    assert text == "EU rejects German call ."
    assert _texts(text, offsets) == ["EU", "rejects", "German", "call", "."]
    assert tokens_to_text([]) == ("", [])
    with pytest.raises(AlignmentError, match="token 1 is empty"):
        tokens_to_text(["a", ""])


def test_locate_tokens() -> None:
    text = "  I don't  like\tit. "
    offsets = locate_tokens(text, ["I", "do", "n't", "like", "it", "."])
    assert _texts(text, offsets) == ["I", "do", "n't", "like", "it", "."]
    with pytest.raises(AlignmentError, match="'like'"):
        locate_tokens("I really like it", ["I", "like", "it"])
    with pytest.raises(AlignmentError, match="after the last token"):
        locate_tokens("I like it", ["I", "like"])


# ----------------------------------------------------------------------------- subword alignment


def test_first_subword_labels_wordpiece_like() -> None:
    # "Johanson lives" -> [CLS] johan ##son lives [SEP] [PAD]
    text = "Johanson lives"
    words = words_of(text)
    offsets = [(0, 0), (0, 5), (5, 8), (9, 14), (0, 0), (0, 0)]
    assert token_to_word(offsets, words) == [-1, 0, -1, 1, -1, -1]
    assert first_subword_labels(offsets, words, [1, 0]) == [-100, 1, -100, 0, -100, -100]
    assert first_subword_labels(offsets, words, [1, 0], ignore_index=-1) == [-1, 1, -1, 0, -1, -1]
    assert word_to_first_token(offsets, words) == [1, 3]


def test_subword_alignment_token_with_leading_space() -> None:
    # byte-level BPE without trimmed offsets: " lives" starts on the space
    words = words_of("Jo lives")
    offsets = [(0, 0), (0, 2), (2, 8), (0, 0)]
    assert token_to_word(offsets, words) == [-1, 0, 1, -1]


def test_subword_alignment_boundary_inside_token_leaves_word_without_token() -> None:
    text = "Berliner"
    words = words_of(text, [6])  # Berlin | er
    offsets = [(0, 0), (0, 8), (0, 0)]
    assert word_to_first_token(offsets, words) == [1, -1]
    assert first_subword_labels(offsets, words, [3, 4]) == [-100, 3, -100]


def test_subword_alignment_truncated_and_empty() -> None:
    words = words_of("a b c")
    assert word_to_first_token([(0, 0), (0, 1), (0, 0)], words) == [1, -1, -1]
    assert token_to_word([], words) == []
    assert token_to_word([(0, 0), (0, 0)], []) == [-1, -1]
    assert first_subword_labels([(0, 0)], [], []) == [-100]


def test_first_subword_labels_length_mismatch() -> None:
    with pytest.raises(AlignmentError, match="1 label ids for 2 words"):
        first_subword_labels([(0, 1)], [(0, 1), (2, 3)], [0])


def test_subword_alignment_unicode_offsets() -> None:
    text = "東京 👍🏽 café"
    words = words_of(text)
    offsets = [(0, 0), (0, 1), (1, 2), (3, 4), (4, 5), (6, 9), (9, 10), (0, 0)]
    assert token_to_word(offsets, words) == [-1, 0, -1, 1, 2, 3, -1, -1]
