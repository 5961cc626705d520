from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from al_loop.data.readers import FORMATS, dedupe_examples, detect_format, item_id_prefix, read_examples
from al_loop.errors import ConfigError, DataFormatError, EmptyInputError
from al_loop.types import Example, ItemId, Span, TaskKind


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def _span_texts(ex: Example) -> list[tuple[str, str]]:
    return [(ex.text[s.start : s.end], s.label) for s in ex.spans or ()]


# ============================================================================ shared data smoke checks


@pytest.fixture(scope="module")
def conll_train(shared_data: Path) -> list[Example]:
    return read_examples(shared_data / "conll2003" / "train.txt")


def test_conll2003_train(shared_data: Path, conll_train: list[Example]) -> None:
    assert detect_format(shared_data / "conll2003" / "train.txt") == "conll"
    examples = conll_train
    assert len(examples) == 14_041
    assert sum(len(ex.text.split(" ")) for ex in examples) == 203_621
    assert sum(len(ex.spans or ()) for ex in examples) == 23_499
    assert {s.label for ex in examples for s in ex.spans or ()} == {"PER", "ORG", "LOC", "MISC"}
    first, second = examples[0], examples[1]
    assert first.text == "EU rejects German call to boycott British lamb ."
    assert _span_texts(first) == [("EU", "ORG"), ("German", "MISC"), ("British", "MISC")]
    assert _span_texts(second) == [("Peter Blackburn", "PER")]
    assert first.item_id == "train:0" and examples[-1].item_id == "train:14040"
    assert len({ex.item_id for ex in examples}) == len(examples)
    assert first.labels is None and all(ex.spans is not None for ex in examples)
    assert first.meta["source_line"] == 3


def test_mit_restaurant_train_tag_first(shared_data: Path) -> None:
    path = shared_data / "mit_restaurant" / "restauranttrain.bio"
    assert detect_format(path) == "bio"
    examples = read_examples(path)
    assert len(examples) == 7_660
    assert sum(len(ex.spans or ()) for ex in examples) == 15_363
    assert {s.label for ex in examples for s in ex.spans or ()} == {
        "Amenity", "Cuisine", "Dish", "Hours", "Location", "Price", "Rating", "Restaurant_Name",
    }
    assert examples[0].text == "2 start restaurants with inside dining"
    assert _span_texts(examples[0]) == [("2 start", "Rating"), ("inside dining", "Amenity")]
    assert examples[1].text == "34" and examples[1].spans == ()


def test_ncbi_disease_train_token_first(shared_data: Path) -> None:
    path = shared_data / "ncbi_disease" / "train.tsv"
    assert detect_format(path) == "bio"
    examples = read_examples(path)
    assert len(examples) == 5_424
    assert sum(len(ex.text.split(" ")) for ex in examples) == 135_701
    assert sum(len(ex.spans or ()) for ex in examples) == 5_134
    assert {s.label for ex in examples for s in ex.spans or ()} == {"Disease"}
    assert examples[0].text.startswith("Identification of APC2 , a homologue of the adenomatous polyposis coli")
    assert _span_texts(examples[0])[0] == ("adenomatous polyposis coli tumour", "Disease")


def test_ncbi_and_mit_other_splits(shared_data: Path) -> None:
    assert len(read_examples(shared_data / "ncbi_disease" / "devel.tsv")) == 923
    assert len(read_examples(shared_data / "ncbi_disease" / "test.tsv")) == 940
    assert len(read_examples(shared_data / "mit_restaurant" / "restaurantvalid.bio")) == 815
    assert len(read_examples(shared_data / "mit_restaurant" / "restauranttest.bio")) == 706


def test_trec_train(shared_data: Path) -> None:
    path = shared_data / "trec" / "TREC.train"
    assert detect_format(path) == "trec"
    examples = read_examples(path)
    assert len(examples) == 5_452
    counts = Counter(lb for ex in examples for lb in ex.labels or ())
    assert counts == {"ABBR": 86, "DESC": 1162, "ENTY": 1250, "HUM": 1223, "LOC": 835, "NUM": 896}
    assert examples[0].text == "How did serfdom develop in and then leave Russia ?"
    assert examples[0].labels == ("DESC",)
    assert examples[0].item_id == "TREC.train:0"
    assert "sisterðcity" in examples[65].text
    fine = read_examples(path, trec_fine=True)
    assert fine[0].labels == ("DESC:manner",)
    assert len({ex.labels for ex in fine}) == 50


def test_trec_test_ids_do_not_collide_with_train(shared_data: Path) -> None:
    test = read_examples(shared_data / "trec" / "TREC.test")
    assert len(test) == 500
    assert test[0].item_id == "TREC.test:0"


def test_sst2_train(shared_data: Path) -> None:
    path = shared_data / "sst2" / "stsa.binary.train"
    assert detect_format(path) == "sst"
    examples = read_examples(path, task="classification")
    assert len(examples) == 6_920
    assert Counter(ex.labels for ex in examples) == {("0",): 3_310, ("1",): 3_610}
    assert examples[0].labels == ("1",)
    assert examples[0].text.startswith("a stirring , funny and finally transporting")
    assert examples[0].item_id == "stsa.binary.train:0"


# ============================================================================ CoNLL / BIO


CONLL = (
    "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
)


def test_conll_basic(tmp_path: Path) -> None:
    examples = read_examples(_write(tmp_path, "d.txt", CONLL))
    assert [ex.text for ex in examples] == ["EU rejects", "Peter Blackburn"]
    assert examples[0].spans == (Span(0, 2, "ORG"),)
    assert examples[1].spans == (Span(0, 15, "PER"),)
    assert [ex.item_id for ex in examples] == ["d:0", "d:1"]
    assert [ex.meta["source_line"] for ex in examples] == [3, 6]


@pytest.mark.parametrize(
    "variant",
    [
        CONLL.replace("\n", "\r\n"),  # CRLF
        CONLL.replace("\n", "\r"),  # old Mac CR
        CONLL.rstrip("\n"),  # no final newline
        CONLL.replace("\n\n", "\n\n\n\n") + "\n\n\n",  # many blank lines in a row
        CONLL.replace("\n", "   \n").replace("O\n", "O\t \n"),  # trailing whitespace
        "\n\n  \n" + CONLL,  # leading blank lines
        "\ufeff" + CONLL,  # UTF-8 BOM
        CONLL.replace(" ", "\t"),  # tab-separated columns
    ],
)
def test_conll_whitespace_variants(tmp_path: Path, variant: str) -> None:
    examples = read_examples(_write(tmp_path, "d.txt", variant), format="conll")
    assert [ex.text for ex in examples] == ["EU rejects", "Peter Blackburn"]
    assert [ex.spans for ex in examples] == [(Span(0, 2, "ORG"),), (Span(0, 15, "PER"),)]


def test_conll_docstart_is_a_sentence_boundary(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.txt", "a X O\n-DOCSTART- -X- -X- O\nb X B-LOC\n")
    assert [ex.text for ex in read_examples(path)] == ["a", "b"]


def test_conll_wrong_column_count(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.txt", CONLL.replace("rejects VBZ B-VP O", "rejects B-VP O"))
    with pytest.raises(DataFormatError, match="expected 4 columns, found 3") as info:
        read_examples(path, format="conll")
    assert info.value.line == 4 and info.value.path == str(path)
    assert f"{path}:4:" in str(info.value)


def test_conll_one_column(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="at least 2 columns") as info:
        read_examples(_write(tmp_path, "d.txt", "\nlonely\n"), format="conll")
    assert info.value.line == 2


def test_conll_invalid_tag(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.txt", CONLL.replace("I-PER", "E-PER"))
    with pytest.raises(DataFormatError, match="invalid tag in column 4") as info:
        read_examples(path)
    assert info.value.line == 7


def test_bio_repair_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    content = "a\tO\nb\tI-LOC\nc\tI-LOC\n\nd\tB-PER\ne\tI-ORG\n"
    with caplog.at_level(logging.WARNING, logger="al_loop.data"):
        examples = read_examples(_write(tmp_path, "d.tsv", content))
    assert _span_texts(examples[0]) == [("b c", "LOC")]
    assert _span_texts(examples[1]) == [("d", "PER"), ("e", "ORG")]
    records = [r for r in caplog.records if r.name == "al_loop.data"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "repaired 2 malformed BIO tag(s)" in records[0].getMessage()
    assert "first at line 2" in records[0].getMessage()


def test_bio_valid_file_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="al_loop.data"):
        read_examples(_write(tmp_path, "d.txt", CONLL))
    assert not [r for r in caplog.records if r.name == "al_loop.data"]


def test_bio_detects_tag_column(tmp_path: Path) -> None:
    tag_first = read_examples(_write(tmp_path, "a.bio", "B-Rating\t5\nI-Rating\tstar\nO\tplaces\n"))
    token_first = read_examples(_write(tmp_path, "b.tsv", "5\tB-Rating\nstar\tI-Rating\nplaces\tO\n"))
    assert tag_first[0].text == token_first[0].text == "5 star places"
    assert tag_first[0].spans == token_first[0].spans == (Span(0, 6, "Rating"),)


def test_bio_tie_goes_to_last_column(tmp_path: Path) -> None:
    examples = read_examples(_write(tmp_path, "a.bio", "O\tB-X\n"))
    assert examples[0].text == "O" and _span_texts(examples[0]) == [("O", "X")]


def test_bio_invalid_tag_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.tsv", "x\tO\ny\tB-LOC\n\nz\tPER\nw\tO\n")
    with pytest.raises(DataFormatError, match="invalid tag in column 2") as info:
        read_examples(path)
    assert info.value.line == 4


def test_bio_wrong_column_count(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.bio", "x\tO\ny\n")
    with pytest.raises(DataFormatError, match="expected 2 columns, found 1") as info:
        read_examples(path)
    assert info.value.line == 2


def test_bio_format_on_conll_file_hints_conll(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.txt", CONLL)
    with pytest.raises(DataFormatError, match="use format 'conll'"):
        read_examples(path, format="bio")


def test_bio_empty_cell(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="column 1 is empty") as info:
        read_examples(_write(tmp_path, "a.tsv", "x\tO\n\tO\n"))
    assert info.value.line == 2


def test_non_utf8_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.txt", b"a X O\r\n\r\nsister\xf0city X O\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8 at byte column") as info:
        read_examples(path, format="conll")
    assert info.value.line == 3
    assert "byte column 7" in str(info.value)


@pytest.mark.parametrize("content", ["", "\n\n", "  \t \r\n", "\ufeff"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    for fmt in FORMATS:
        with pytest.raises(EmptyInputError, match="empty"):
            read_examples(_write(tmp_path, "e.txt", content), format=fmt)


def test_file_with_no_examples(tmp_path: Path) -> None:
    with pytest.raises(EmptyInputError, match="no examples"):
        read_examples(_write(tmp_path, "d.txt", "-DOCSTART- -X- -X- O\n\n"))


def test_missing_file_is_a_data_format_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataFormatError, match="file not found") as info:
        read_examples(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(DataFormatError, match="file not found"):
        detect_format(missing)
    with pytest.raises(DataFormatError, match="file not found"):
        read_examples(missing, format="conll")


def test_directory_is_a_data_format_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="directory"):
        read_examples(tmp_path, format="conll")


# ============================================================================ TREC / SST


def test_trec_and_sst_lines(tmp_path: Path) -> None:
    trec = _write(tmp_path, "q.txt", "DESC:manner How did serfdom develop ?  \r\n\r\nHUM:ind Who is he ?")
    examples = read_examples(trec)
    assert [(ex.text, ex.labels) for ex in examples] == [
        ("How did serfdom develop ?", ("DESC",)), ("Who is he ?", ("HUM",)),
    ]
    assert examples[1].meta == {"source_line": 3, "fine_label": "HUM:ind"}
    assert read_examples(trec, trec_fine=True)[1].labels == ("HUM:ind",)
    sst = _write(tmp_path, "s.txt", "1 great film\n\n0 dull .\n")
    assert [(ex.text, ex.labels) for ex in read_examples(sst)] == [("great film", ("1",)), ("dull .", ("0",))]


@pytest.mark.parametrize(
    ("fmt", "content", "message", "line"),
    [
        ("trec", "DESC:manner How ?\nHUM:ind\n", "empty text", 2),
        ("trec", "DESC:manner How ?\nHUM:ind   \t\n", "empty text", 2),
        ("trec", "DESC:manner How ?\n\nWhat is it ?\n", "COARSE:fine", 3),
        ("sst", "1 good\n0\n", "empty text", 2),
        ("sst", "1 good\npositive good\n", "integer label", 2),
    ],
)
def test_trec_sst_errors(tmp_path: Path, fmt: str, content: str, message: str, line: int) -> None:
    with pytest.raises(DataFormatError, match=message) as info:
        read_examples(_write(tmp_path, "x.txt", content), format=fmt)
    assert info.value.line == line


def test_task_contradicting_format(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="NER data"):
        read_examples(_write(tmp_path, "d.txt", CONLL), task="classification")
    with pytest.raises(DataFormatError, match="classification data"):
        read_examples(_write(tmp_path, "s.txt", "1 a\n"), task=TaskKind.NER)
    assert read_examples(_write(tmp_path, "d2.txt", CONLL), task="ner")


def test_unknown_format_and_task(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.txt", CONLL)
    with pytest.raises(ConfigError, match="unknown format 'xml'"):
        read_examples(path, format="xml")
    with pytest.raises(ConfigError, match="unknown task 'pos'"):
        read_examples(path, task="pos")


# ============================================================================ JSONL


def _jsonl(tmp_path: Path, rows: list[object], name: str = "data.jsonl") -> Path:
    return _write(tmp_path, name, "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def test_jsonl_ner_spans(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [
        {"id": "a1", "text": "Angela Merkel in Paris", "spans": [{"start": 17, "end": 22, "label": "LOC"},
                                                                  {"start": 0, "end": 13, "label": "PER"}]},
        {"text": "nothing here", "spans": []},
        {"text": "unlabelled text", "source": "web"},
        {"id": 7, "text": "  Bonn ", "spans": [[1, 7, "LOC"]]},
    ])
    examples = read_examples(path)
    assert [ex.item_id for ex in examples] == ["a1", "data:1", "data:2", "7"]
    assert _span_texts(examples[0]) == [("Angela Merkel", "PER"), ("Paris", "LOC")]
    assert examples[1].spans == () and examples[1].is_labelled
    assert examples[2].spans is None and not examples[2].is_labelled
    assert examples[2].meta == {"source": "web", "source_line": 3}
    assert examples[3].spans == (Span(2, 6, "LOC"),)  # trimmed


def test_jsonl_ner_tokens_and_tags(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [
        {"tokens": ["New", "York", "is", "big"], "tags": ["B-LOC", "I-LOC", "O", "O"]},
        {"tokens": ["I", "do", "n't"], "text": "I don't"},
        {"tokens": ["Hi", "Bob"], "text": "Hi,  Bob", "tags": ["O", "B-PER"]},
    ])
    with pytest.raises(DataFormatError, match="tokens do not match the text") as info:
        read_examples(path)
    assert info.value.line == 3
    path = _jsonl(tmp_path, [
        {"tokens": ["New", "York", "is", "big"], "tags": ["B-LOC", "I-LOC", "O", "O"]},
        {"tokens": ["I", "do", "n't"], "text": "I don't"},
        {"tokens": ["Hi", "Bob"], "text": "Hi  Bob", "tags": ["O", "I-PER"]},
    ])
    examples = read_examples(path)
    assert examples[0].text == "New York is big" and _span_texts(examples[0]) == [("New York", "LOC")]
    assert examples[1].text == "I don't" and examples[1].spans is None
    assert examples[2].text == "Hi  Bob" and _span_texts(examples[2]) == [("Bob", "PER")]


def test_jsonl_classification(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [
        {"text": "good", "label": "pos"},
        {"text": "both", "label": ["a", "b"]},
        {"text": "numeric", "label": 1},
        {"text": "unlabelled"},
        {"text": "null label", "label": None},
    ])
    examples = read_examples(path)
    assert [ex.labels for ex in examples] == [("pos",), ("a", "b"), ("1",), None, None]
    assert all(ex.spans is None for ex in examples)


def test_jsonl_custom_fields_and_json_array(tmp_path: Path) -> None:
    rows = [{"uid": "x", "body": "hello", "cat": "greet"}, {"uid": "y", "body": "bye", "cat": "leave"}]
    path = _write(tmp_path, "data.json", json.dumps(rows, indent=2))
    examples = read_examples(path, text_field="body", label_field="cat", id_field="uid")
    assert [(ex.item_id, ex.text, ex.labels) for ex in examples] == [
        ("x", "hello", ("greet",)), ("y", "bye", ("leave",)),
    ]


def test_jsonl_text_only_gives_unlabelled(tmp_path: Path) -> None:
    examples = read_examples(_jsonl(tmp_path, [{"text": "a"}, {"text": "b"}]))
    assert [ex.is_labelled for ex in examples] == [False, False]


def test_jsonl_blank_lines_and_crlf(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.jsonl", '\r\n{"text": "a", "label": "x"}\r\n\r\n  \r\n{"text": "b", "label": "y"}')
    examples = read_examples(path)
    assert [ex.text for ex in examples] == ["a", "b"]
    assert [ex.meta["source_line"] for ex in examples] == [2, 5]
    assert [ex.item_id for ex in examples] == ["d:0", "d:1"]


def test_jsonl_text_with_unicode_line_separator(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.jsonl", '{"text": "a\u2028b\u0085c"}\n{"text": "d"}\n')
    assert [ex.text for ex in read_examples(path)] == ["a\u2028b\u0085c", "d"]


@pytest.mark.parametrize(
    ("rows", "message", "line"),
    [
        ([{"text": "a"}, '{"text": "b",'], "bad JSON", 2),
        ([{"text": "a"}, "[1, 2]"], "one JSON object per line", 2),
        ([{"text": "a"}, {"body": "b"}], "missing text field 'text'", 2),
        ([{"text": "a"}, {"text": "  "}], "empty text", 2),
        ([{"text": "a"}, {"text": 5}], "must be a string", 2),
        ([{"id": "a", "text": "a"}, {"id": "a", "text": "b"}], "duplicate item id \\(first seen at line", 2),
        ([{"id": [1], "text": "a"}], "item id must be", 1),
        ([{"text": "ab", "spans": [{"start": 0, "end": 3, "label": "X"}]}], "end > text length", 1),
        ([{"text": "abc", "spans": [[0, 2, "X"], [1, 3, "Y"]]}], "overlap", 1),
        ([{"text": "abc", "spans": [{"start": "0", "end": 2, "label": "X"}]}], "integers", 1),
        ([{"text": "abc", "spans": "0-2"}], "spans must be a list", 1),
        ([{"text": "abc", "spans": [[0, 2]]}], "span 0 must be", 1),
        ([{"tokens": ["a", "b"], "tags": ["O"]}], "one tag per token", 1),
        ([{"tokens": ["a"], "tags": ["X"]}], "invalid tag at token 0", 1),
        ([{"tokens": []}], "empty text", 1),
        ([{"text": "a", "label": ""}], "empty label", 1),
        ([{"text": "a", "label": {"k": 1}}], "label in 'label' must be", 1),
    ],
)
def test_jsonl_errors(tmp_path: Path, rows: list[object], message: str, line: int) -> None:
    with pytest.raises(DataFormatError, match=message) as info:
        read_examples(_jsonl(tmp_path, rows))
    assert info.value.line == line


def test_jsonl_bad_json_in_array_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="bad JSON") as info:
        read_examples(_write(tmp_path, "d.json", '[\n {"text": "a"},\n {"text": }\n]'))
    assert info.value.line == 3


def test_jsonl_task_inference_and_conflicts(tmp_path: Path) -> None:
    mixed = _jsonl(tmp_path, [{"text": "a", "label": "x"}, {"text": "b", "spans": []}])
    with pytest.raises(DataFormatError, match="pass the task"):
        read_examples(mixed)
    ner = read_examples(mixed, task="ner")
    assert [ex.spans for ex in ner] == [None, ()]
    assert ner[0].meta["label"] == "x"
    cls = read_examples(mixed, task=TaskKind.CLASSIFICATION)
    assert [ex.labels for ex in cls] == [("x",), None]
    only_labels = _jsonl(tmp_path, [{"text": "a", "label": "x"}], "l.jsonl")
    with pytest.raises(DataFormatError, match="task is ner"):
        read_examples(only_labels, task="ner")
    only_spans = _jsonl(tmp_path, [{"text": "a", "spans": []}], "s.jsonl")
    with pytest.raises(DataFormatError, match="task is classification"):
        read_examples(only_spans, task="classification")


# ============================================================================ CSV


def test_csv_classification(tmp_path: Path) -> None:
    content = 'id,text,label,extra\r\n1,"good, really",pos,e1\r\n2,"multi\nline",a|b,e2\r\n\r\n,no label,,e3\r\n'
    examples = read_examples(_write(tmp_path, "c.csv", content))
    assert [(ex.item_id, ex.text, ex.labels) for ex in examples] == [
        ("1", "good, really", ("pos",)), ("2", "multi\nline", ("a", "b")), ("c:2", "no label", None),
    ]
    assert examples[0].meta == {"extra": "e1", "source_line": 2}
    assert examples[2].meta["source_line"] == 6


def test_csv_ner_spans_column(tmp_path: Path) -> None:
    content = 'text,spans\nParis is nice,"[{""start"": 0, ""end"": 5, ""label"": ""LOC""}]"\nnothing,[]\nopen,\n'
    examples = read_examples(_write(tmp_path, "c.csv", content))
    assert _span_texts(examples[0]) == [("Paris", "LOC")]
    assert examples[1].spans == () and examples[2].spans is None


def test_csv_custom_fields(tmp_path: Path) -> None:
    content = "body,cat\nhello,greet\n"
    examples = read_examples(_write(tmp_path, "c.csv", content), text_field="body", label_field="cat")
    assert examples[0].labels == ("greet",) and examples[0].item_id == "c:0"


@pytest.mark.parametrize(
    ("content", "message", "line"),
    [
        ("body,label\nx,y\n", "missing text column 'text'", 1),
        ("text,label\nx,y\n  ,y\n", "empty text", 3),
        ("text,label\nx,y\nz\n", "expected 2 fields", 3),
        ("text,label\nx,y\nz,y,w\n", "expected 2 fields", 3),
        ("text,label\nx,a||b\n", "empty label", 2),
        ("text,spans\nabc,[0\n", "bad JSON in column 'spans'", 2),
        ('text,spans\nabc,"[[0, 9, ""X""]]"\n', "end > text length", 2),
        ("id,text\na,x\na,y\n", "duplicate item id \\(first seen at line", 3),
        ("text,text\nx,y\n", "duplicate column name in the header: field 2 repeats field 1", 1),
    ],
)
def test_csv_errors(tmp_path: Path, content: str, message: str, line: int) -> None:
    with pytest.raises(DataFormatError, match=message) as info:
        read_examples(_write(tmp_path, "c.csv", content))
    assert info.value.line == line


def test_csv_both_label_and_spans_columns_need_task(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.csv", "text,label,spans\nx,y,[]\n")
    with pytest.raises(DataFormatError, match="pass the task"):
        read_examples(path)
    assert read_examples(path, task="classification")[0].labels == ("y",)
    assert read_examples(path, task="ner")[0].spans == ()


def test_csv_header_only_has_no_examples(tmp_path: Path) -> None:
    with pytest.raises(EmptyInputError, match="no examples"):
        read_examples(_write(tmp_path, "c.csv", "text,label\n"))


# ============================================================================ detect_format


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.jsonl", '{"text": "x"}\n', "jsonl"),
        ("a.JSON", "[]", "jsonl"),
        ("a.csv", "text\nx\n", "csv"),
        ("a.bio", "O\tx\n", "bio"),
        ("a.tsv", "x\tO\n", "bio"),
        ("a.tsv", "x\tNN\tO\n", "conll"),  # more than two columns
        ("a.txt", CONLL, "conll"),
        ("a.txt", "EU\tB-ORG\nrejects\tO\n", "bio"),
        ("a.txt", "B-ORG EU\nO rejects\n", "bio"),
        ("a.txt", "-DOCSTART- O\n\n", "bio"),
        ("a.txt", "-DOCSTART- -X- -X- O\n\n", "conll"),
        ("a.conll", "1 CD I-NP O\n2 CD I-NP O\n", "conll"),  # not SST despite the leading digit
        ("TREC.train", "DESC:manner How did serfdom develop ?\n", "trec"),
        ("stsa.binary.dev", "1 a fine film\n0 a bad one\n", "sst"),
        ("data", '{"text": "x"}\n', "jsonl"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, content: str, expected: str) -> None:
    assert detect_format(_write(tmp_path, name, content)) == expected


def test_detect_format_unknown_asks_for_format(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="--format") as info:
        detect_format(_write(tmp_path, "notes.txt", "just some prose\nover two lines\n"))
    assert "notes.txt" in str(info.value)


def test_detect_format_empty_file(tmp_path: Path) -> None:
    with pytest.raises(EmptyInputError):
        detect_format(_write(tmp_path, "e.txt", "\n \n"))


# ============================================================================ ids and dedupe


def test_item_id_prefix() -> None:
    assert item_id_prefix("/x/train.txt") == "train"
    assert item_id_prefix("restauranttrain.bio") == "restauranttrain"
    assert item_id_prefix("TREC.train") == "TREC.train"
    assert item_id_prefix("stsa.binary.dev") == "stsa.binary.dev"
    assert item_id_prefix(Path("pool.JSONL")) == "pool"


def test_dedupe_examples_keeps_first() -> None:
    exs = [
        Example(ItemId("a"), "same", labels=("x",)),
        Example(ItemId("b"), "other"),
        Example(ItemId("c"), "same", labels=("y",)),
        Example(ItemId("d"), "same "),
        Example(ItemId("e"), "other"),
    ]
    kept, dropped = dedupe_examples(exs)
    assert [ex.item_id for ex in kept] == ["a", "b", "d"]
    assert kept[0].labels == ("x",)
    assert dropped == ["c", "e"]
    assert dedupe_examples([]) == ([], [])


def test_dedupe_on_conll_train(conll_train: list[Example]) -> None:
    examples = conll_train
    kept, dropped = dedupe_examples(examples)
    assert len(kept) + len(dropped) == len(examples)
    assert len({ex.text for ex in kept}) == len(kept)
    assert dropped  # CoNLL repeats short sentences such as scores and datelines
