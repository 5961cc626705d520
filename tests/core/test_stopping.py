"""The stopping criteria (al_loop/rounds/stopping.py): kappa, changes, uncertainty, the record, the stop set."""

from __future__ import annotations

import numpy as np
import pytest

from al_loop.data.schema import LabelSchema
from al_loop.rounds.stopping import (
    CRITERIA,
    KAPPA_THRESHOLD,
    advice,
    cohen_kappa,
    compare_predictions,
    criteria_record,
    draw_stop_set,
    first_stops,
    point_fields,
    prediction_code,
    stopping_summary,
)
from al_loop.types import ItemId, Span, TaskKind


# ------------------------------------------------------------------ Cohen's kappa, computed by hand
def test_kappa_two_classes_by_hand() -> None:
    # p_o = 3/4; marginals a: 0 .5, 1 .5; b: 0 .25, 1 .75 -> p_e = .125 + .375 = .5; kappa = .25 / .5
    assert cohen_kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)


def test_kappa_three_classes_by_hand() -> None:
    # p_o = 5/6; a: A 3/6 B 2/6 C 1/6; b: A 2/6 B 3/6 C 1/6 -> p_e = (6 + 6 + 1) / 36 = 13/36
    # kappa = (30/36 - 13/36) / (23/36) = 17/23
    assert cohen_kappa(list("AAABBC"), list("AABBBC")) == pytest.approx(17 / 23)


def test_kappa_edge_cases() -> None:
    assert cohen_kappa([1, 0], [0, 1]) == pytest.approx(-1.0)  # p_o 0, p_e .5
    assert cohen_kappa(["x"] * 5, ["x"] * 5) == 1.0  # p_e = 1: perfect agreement, not 0/0
    assert cohen_kappa([], []) is None
    assert cohen_kappa([(0,), (1,)], [(0,), (1,)]) == 1.0  # tuples (label sets) are categories
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 2])


# ------------------------------------------------------------------ predictions as codes
def test_codes_of_classification_predictions() -> None:
    labels = ["a", "b", "c"]
    assert prediction_code(TaskKind.CLASSIFICATION, ("c",), "", labels, labels) == [2]
    assert prediction_code(TaskKind.CLASSIFICATION, ["b", "a"], "", labels, labels) == [0, 1]  # label set, sorted
    assert prediction_code(TaskKind.CLASSIFICATION, (), "", labels, labels) == []


def test_codes_of_ner_predictions_are_word_tags_from_spans_or_their_dicts() -> None:
    schema = LabelSchema.build("ner", ["LOC", "PER"])
    text = "Anna lives in New York"
    spans = (Span(0, 4, "PER"), Span(14, 22, "LOC"))
    tags = list(schema.tags)
    want = [tags.index(t) for t in ("B-PER", "O", "O", "B-LOC", "I-LOC")]
    assert prediction_code(TaskKind.NER, spans, text, schema.labels, schema.tags) == want
    assert prediction_code(TaskKind.NER, [s.to_dict() for s in spans], text, schema.labels, schema.tags) == want
    assert prediction_code(TaskKind.NER, (), "", schema.labels, schema.tags) == []


# ------------------------------------------------------------------ comparing two rounds
def test_compare_ner_counts_words_for_kappa_and_sentences_for_change() -> None:
    prev = {ItemId("x"): [0, 1, 0], ItemId("y"): [2, 0], ItemId("gone"): [1]}
    cur = {ItemId("x"): [0, 1, 0], ItemId("y"): [0, 0], ItemId("new"): [1]}
    got = compare_predictions(prev, cur, TaskKind.NER)
    # words of x and y: a = 0 1 0 2 0, b = 0 1 0 0 0; p_o = 4/5, p_e = 3/5*4/5 + 1/5*1/5 = 13/25 -> 7/12
    assert got["compared"] == 2 and got["changed"] == pytest.approx(0.5)
    assert got["kappa"] == pytest.approx(7 / 12)


def test_compare_only_items_predicted_in_both_rounds() -> None:
    prev = {ItemId(f"i{i}"): [i % 2] for i in range(4)}
    cur = {ItemId(f"i{i}"): [i % 2] for i in range(2, 6)}  # i0, i1 labelled meanwhile; i4, i5 new
    got = compare_predictions(prev, cur, TaskKind.CLASSIFICATION)
    assert got == {"compared": 2, "kappa": 1.0, "changed": 0.0}
    assert compare_predictions({}, cur, TaskKind.CLASSIFICATION) == {"compared": 0, "kappa": None, "changed": None}


# ------------------------------------------------------------------ the record and its thresholds
def test_record_stabilizing_predictions_needs_a_full_window_above_the_threshold() -> None:
    first = criteria_record([], {"compared": 0, "kappa": None, "changed": None}, 0.3, stop_set=10, predicted=10)
    assert first["kappa"] is None and not any(first["holds"].values())
    assert first["advice"].startswith("too early to tell")
    two = criteria_record([0.995], {"compared": 9, "kappa": 1.0, "changed": 0.0}, 0.3, stop_set=10, predicted=9)
    assert two["kappa_mean"] is None and not two["holds"]["stabilizing_predictions"]
    assert two["holds"]["classification_change"] and two["stable_rounds"] == 2
    stable = criteria_record([0.995, 0.99], {"compared": 9, "kappa": 1.0, "changed": 0.0}, 0.01, stop_set=10,
                             predicted=9)
    assert stable["kappa_window"] == [0.995, 0.99, 1.0] and stable["kappa_mean"] == pytest.approx(0.995)
    assert stable["holds"] == dict.fromkeys(CRITERIA, True) and stable["stable_rounds"] == 3
    assert "stable for 3 rounds" in stable["advice"] and "unlikely to change the model much" in stable["advice"]
    moving = criteria_record([0.5, 0.995], {"compared": 9, "kappa": 0.999, "changed": 0.02}, 0.2, stop_set=10,
                             predicted=9)
    assert moving["kappa_mean"] == pytest.approx((0.5 + 0.995 + 0.999) / 3)
    assert moving["kappa_mean"] < KAPPA_THRESHOLD and not any(moving["holds"].values())
    assert moving["stable_rounds"] == 2 and "still moving" in moving["advice"] and "2.0%" in moving["advice"]


@pytest.mark.parametrize(("changed", "uncertainty", "holds"), [
    (0.01, 0.049, (True, True)), (0.011, 0.05, (False, False)), (0.0, 0.0, (True, True)),
])
def test_change_and_uncertainty_thresholds(changed: float, uncertainty: float, holds: tuple[bool, bool]) -> None:
    rec = criteria_record([], {"compared": 100, "kappa": 0.5, "changed": changed}, uncertainty, stop_set=100,
                          predicted=100)
    assert (rec["holds"]["classification_change"], rec["holds"]["overall_uncertainty"]) == holds


def test_advice_is_a_sentence_for_every_state() -> None:
    assert advice({}).startswith("too early")
    text = advice({"kappa": 0.9, "kappa_window": [0.9], "kappa_mean": None})
    assert "needs 3 rounds" in text and "has 1" in text


# ------------------------------------------------------------------ the stop set
def test_stop_set_is_seeded_sized_and_independent_of_the_chunking() -> None:
    ids = [ItemId(f"i{i}") for i in range(3000)]
    a = draw_stop_set([ids[i:i + 1000] for i in range(0, 3000, 1000)], 200, seed=13)
    b = draw_stop_set([ids[i:i + 7] for i in range(0, 3000, 7)], 200, seed=13)
    c = draw_stop_set([ids], 200, seed=14)
    assert a == b and len(a) == len(set(a)) == 200 and set(a) <= set(ids)
    assert a != c
    assert [ids.index(i) for i in a] == sorted(ids.index(i) for i in a)  # pool order
    # roughly uniform: each third of the pool holds about a third of the sample
    thirds = np.bincount([ids.index(i) // 1000 for i in a], minlength=3)
    assert thirds.min() > 40
    assert draw_stop_set([ids[:5]], 200, seed=1) == ids[:5]
    assert draw_stop_set([ids], 0, seed=1) == []


# ------------------------------------------------------------------ where a criterion fires (simulate)
def test_first_stops_and_the_simulation_summary() -> None:
    rounds = [{"round": 1, "labels": 20, "score": 0.5, "stops": []},
              {"round": 2, "labels": 30, "score": 0.6, "stops": ["overall_uncertainty"]},
              {"round": 3, "labels": 40, "score": 0.7, "stops": ["stabilizing_predictions", "overall_uncertainty"]}]
    got = first_stops(rounds)
    assert got["overall_uncertainty"] == {"labels": 30, "score": 0.6, "round": 2}
    assert got["stabilizing_predictions"] == {"labels": 40, "score": 0.7, "round": 3}
    assert got["classification_change"] is None

    def point(repeat: int, k: int, labels: int, score: float, holds: dict[str, bool]) -> dict[str, object]:
        return {"strategy": "margin", "repeat": repeat, "round": k, "labels": labels, "score": score,
                **point_fields({"kappa": 0.9, "changed": 0.1, "uncertainty": 0.2, "holds": holds})}

    pts = [point(0, 1, 20, 0.5, {}), point(0, 2, 30, 0.6, {"overall_uncertainty": True}),
           point(0, 3, 40, 0.8, {}),
           point(1, 1, 20, 0.4, {}), point(1, 2, 30, 0.7, {}), point(1, 3, 40, 0.9, {"overall_uncertainty": True})]
    assert pts[1]["stops"] == "overall_uncertainty" and pts[0]["stops"] == ""
    summary = stopping_summary(pts, "margin")
    unc = summary["overall_uncertainty"]
    assert (unc["fired"], unc["repeats"]) == (2, 2)
    assert unc["labels"] == pytest.approx(35.0) and unc["score"] == pytest.approx(0.75)
    assert unc["final_score"] == pytest.approx(0.85) and unc["final_labels"] == pytest.approx(40.0)
    assert [r["labels"] for r in unc["per_repeat"]] == [30, 40]
    never = summary["stabilizing_predictions"]
    assert never["fired"] == 0 and never["labels"] is None and never["score"] is None
    assert point_fields(None) == {"kappa": None, "changed": None, "uncertainty": None, "stops": ""}
