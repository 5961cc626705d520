from __future__ import annotations

import json

import pytest

from al_loop.errors import EmptyInputError, UnknownLabelError
from al_loop.training.metrics import classification_metrics, ner_metrics
from al_loop.types import Span

LABELS = ["a", "b", "c"]


def test_single_label_accuracy_f1_confusion() -> None:
    gold = [("a",), ("a",), ("b",), ("c",)]
    pred = [("a",), ("b",), ("b",), ("c",)]
    m = classification_metrics(gold, pred, LABELS)
    assert m["score"] == m["accuracy"] == pytest.approx(0.75)
    # a: P=1 R=.5 F=2/3; b: P=.5 R=1 F=2/3; c: 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["confusion"] == {"labels": LABELS, "matrix": [[1, 1, 0], [0, 1, 0], [0, 0, 1]]}
    assert m["n"] == 4
    json.dumps(m)  # plain Python types only


def test_single_label_absent_class_has_zero_scores() -> None:
    m = classification_metrics([("a",), ("b",)], [("a",), ("b",)], LABELS)
    assert m["score"] == 1.0
    assert m["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_multi_label_subset_accuracy_and_cooccurrence_matrix() -> None:
    gold = [("a", "b"), ("c",), ("a",)]
    pred = [("a", "b"), ("a", "c"), ("b",)]
    m = classification_metrics(gold, pred, LABELS, multi_label=True)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["per_label"]["a"]["support"] == 2
    assert m["per_label"]["a"]["precision"] == pytest.approx(0.5)
    assert m["confusion"]["matrix"][0] == [1, 2, 0]  # gold a: predicted a once, b twice
    assert m["confusion"]["matrix"][2] == [1, 0, 1]
    json.dumps(m)


def test_classification_errors() -> None:
    with pytest.raises(EmptyInputError):
        classification_metrics([], [], LABELS)
    with pytest.raises(ValueError):
        classification_metrics([("a",)], [], LABELS)
    with pytest.raises(UnknownLabelError):
        classification_metrics([("zzz",)], [("a",)], LABELS)
    with pytest.raises(ValueError):
        classification_metrics([("a", "b")], [("a",)], LABELS)


def test_ner_perfect_and_partial() -> None:
    texts = ["John lives in New York City .", "Nothing here ."]
    gold = [[Span(0, 4, "PER"), Span(14, 27, "LOC")], []]
    m = ner_metrics(texts, gold, gold)
    assert m["score"] == m["f1"] == 1.0
    assert m["errors"] == {"LOC": {"fp": 0, "fn": 0}, "PER": {"fp": 0, "fn": 0}}

    pred = [[Span(0, 4, "PER"), Span(14, 22, "LOC")], [Span(0, 7, "ORG")]]  # boundary error + a false ORG
    m = ner_metrics(texts, gold, pred)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 2)
    assert m["score"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert m["errors"]["LOC"] == {"fp": 1, "fn": 1}
    assert m["errors"]["ORG"] == {"fp": 1, "fn": 0}
    assert m["per_label"]["PER"]["f1"] == 1.0
    assert m["n_gold"] == 2 and m["n_pred"] == 3
    json.dumps(m)


def test_ner_span_inside_a_regex_word_is_exact() -> None:
    # "Berliner": gold marks "Berlin" only; predicting the whole word is a boundary error
    text = "Berliner Zeitung"
    m = ner_metrics([text], [[Span(0, 6, "LOC")]], [[Span(0, 8, "LOC")]])
    assert m["score"] == 0.0
    m = ner_metrics([text], [[Span(0, 6, "LOC")]], [[Span(0, 6, "LOC")]])
    assert m["score"] == 1.0


def test_ner_no_entities_anywhere_is_zero() -> None:
    m = ner_metrics(["a b"], [[]], [[]])
    assert m["score"] == 0.0 and m["per_label"] == {}


def test_ner_errors() -> None:
    with pytest.raises(EmptyInputError):
        ner_metrics([], [], [])
    with pytest.raises(ValueError):
        ner_metrics(["a"], [[]], [])
