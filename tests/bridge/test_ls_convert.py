"""Annotations, predictions and webhook payloads <-> al-loop types (no server).

Payload shapes follow the captures in LABEL_STUDIO.md §5 (Label Studio 1.23.2).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from al_loop.errors import AlignmentError, UnknownLabelError
from al_loop.types import Example, ItemId, Span
from annotator_bridge.labelstudio.config import classification_config, ner_config, parse_label_config
from annotator_bridge.labelstudio.convert import (
    AnnotationEvent,
    AnnotationsCreated,
    AnnotationsDeleted,
    Ignored,
    Skipped,
    StartTraining,
    WebhookPayloadError,
    annotation_to_example,
    parse_webhook,
    prediction_result,
    prediction_to_ls,
)

NER = parse_label_config(ner_config(["PER", "ORG", "LOC"]))
CLS = parse_label_config(classification_config(["Positive", "Negative", "Neutral"], from_name="sentiment"))
MULTI = parse_label_config(classification_config(["a", "b", "c"], multi_label=True))
TEXT = "Alice Smith works at Acme Corp in Paris."


def ner_item(start: int, end: int, label: str, text: str | None = None, from_name: str = "label") -> dict[str, Any]:
    value: dict[str, Any] = {"start": start, "end": end, "labels": [label]}
    if text is not None:
        value["text"] = text
    return {"from_name": from_name, "to_name": "text", "type": "labels", "value": value}


def choice_item(*choices: str, from_name: str = "sentiment") -> dict[str, Any]:
    return {"from_name": from_name, "to_name": "text", "type": "choices", "value": {"choices": list(choices)}}


PROJECT: dict[str, Any] = {"id": 7, "title": "AL text classification", "label_config": "<View>...</View>",
                           "model_version": "", "sampling": "Sequential sampling"}
ANNOTATION_CREATED: dict[str, Any] = {
    "action": "ANNOTATION_CREATED",
    "annotation": {"id": 1, "result": [choice_item("Positive")], "was_cancelled": False, "ground_truth": False,
                   "created_at": "2026-11-25T07:58:31.816564Z", "updated_at": "2026-11-25T07:58:31.816600Z",
                   "draft_created_at": None, "lead_time": 3.2, "prediction": {}, "result_count": 1,
                   "unique_id": "e1584146-x", "import_id": None, "last_action": None, "bulk_created": False,
                   "task": 11, "project": 7, "completed_by": 1, "updated_by": 1, "parent_prediction": None,
                   "parent_annotation": None, "last_created_by": None},
    "task": {"id": 11, "data": {"text": "Great product", "item_id": "doc-3"}, "meta": {}, "is_labeled": True,
             "overlap": 1, "inner_id": 1, "total_annotations": 1, "cancelled_annotations": 0,
             "total_predictions": 1, "project": 7},
    "project": PROJECT,
}


# ---------------------------------------------------------------------------- annotations -> examples
def test_ner_annotation_to_example() -> None:
    result = [ner_item(21, 30, "ORG", "Acme Corp"), ner_item(0, 11, "PER", "Alice Smith"),
              {"from_name": "comment", "to_name": "text", "type": "textarea", "value": {"text": ["hm"]}}]
    ex = annotation_to_example(result, item_id="i1", text=TEXT, config=NER, annotation_id=5, task_id=9)
    assert isinstance(ex, Example)
    assert ex.spans == (Span(0, 11, "PER"), Span(21, 30, "ORG"))
    assert ex.labels is None and ex.item_id == "i1" and ex.text == TEXT
    assert ex.meta["ls_annotation_id"] == 5 and ex.meta["ls_task_id"] == 9


def test_ner_empty_result_is_labelled_without_entities() -> None:
    ex = annotation_to_example([], item_id="i1", text=TEXT, config=NER)
    assert isinstance(ex, Example) and ex.spans == () and ex.is_labelled


def test_ner_text_mismatch_tolerated_offsets_win(caplog: pytest.LogCaptureFixture) -> None:
    ex = annotation_to_example([ner_item(0, 5, "PER", "Alicia")], item_id="i1", text=TEXT, config=NER)
    assert isinstance(ex, Example) and ex.spans == (Span(0, 5, "PER"),)


def test_ner_utf16_offsets_from_old_front_ends_are_recovered() -> None:
    text = "\U0001F4A9 Bob met Acme"
    # JavaScript counts the emoji as 2 units: "Acme" is [11, 15) there, [10, 14) in Python.
    ex = annotation_to_example([ner_item(11, 15, "ORG", "Acme")], item_id="i", text=text, config=NER)
    assert isinstance(ex, Example) and ex.spans == (Span(10, 14, "ORG"),)
    ex = annotation_to_example([ner_item(10, 14, "ORG", "Acme")], item_id="i", text=text, config=NER)
    assert isinstance(ex, Example) and ex.spans == (Span(10, 14, "ORG"),)
    ex = annotation_to_example([ner_item(2, 5, "PER", "Bob")], item_id="i", text=text, config=NER)
    assert isinstance(ex, Example) and ex.spans == (Span(2, 5, "PER"),)


@pytest.mark.parametrize("result", [
    [ner_item(30, 45, "LOC")],           # ends past the text
    [ner_item(-1, 3, "PER")],            # negative start
    [ner_item(5, 5, "PER")],             # empty
    [ner_item(6, 2, "PER")],             # inverted
    [ner_item(5, 6, "PER")],             # whitespace only
    [ner_item(0, 11, "PER"), ner_item(6, 15, "ORG")],   # overlapping
    [{"from_name": "label", "to_name": "text", "type": "labels",
      "value": {"start": 0, "end": 5, "labels": ["PER", "ORG"]}}],   # two labels on one region
    [{"from_name": "label", "to_name": "text", "type": "labels", "value": {"start": "0", "end": 5,
                                                                         "labels": ["PER"]}}],
])
def test_ner_bad_spans_raise_alignment_error(result: list[dict[str, Any]]) -> None:
    with pytest.raises(AlignmentError):
        annotation_to_example(result, item_id="i1", text=TEXT, config=NER)


def test_ner_unknown_label() -> None:
    with pytest.raises(UnknownLabelError, match="MISC"):
        annotation_to_example([ner_item(0, 5, "MISC")], item_id="i1", text=TEXT, config=NER)


def test_classification_annotation() -> None:
    ex = annotation_to_example([choice_item("Negative")], item_id="d", text="bad", config=CLS)
    assert isinstance(ex, Example) and ex.labels == ("Negative",) and ex.spans is None
    ex = annotation_to_example([choice_item("c", "a", from_name="label")], item_id="d", text="x", config=MULTI)
    assert isinstance(ex, Example) and ex.labels == ("a", "c")
    ex = annotation_to_example([], item_id="d", text="x", config=MULTI)
    assert isinstance(ex, Example) and ex.labels == ()


def test_classification_errors() -> None:
    with pytest.raises(UnknownLabelError, match="Meh"):
        annotation_to_example([choice_item("Meh")], item_id="d", text="x", config=CLS)
    with pytest.raises(UnknownLabelError, match="exactly one"):
        annotation_to_example([choice_item("Positive", "Negative")], item_id="d", text="x", config=CLS)
    with pytest.raises(UnknownLabelError, match="exactly one"):
        annotation_to_example([], item_id="d", text="x", config=CLS)


@pytest.mark.parametrize("config", [NER, CLS])
def test_cancelled_annotation_is_skipped_never_a_label(config: Any) -> None:
    out = annotation_to_example([], item_id="i9", text=TEXT, config=config, was_cancelled=True, annotation_id=3,
                                task_id=4)
    assert out == Skipped(ItemId("i9"), 3, 4) and out.label == "skipped"
    assert not isinstance(out, Example)


# ---------------------------------------------------------------------------- predictions
def test_ner_prediction_shape_reads_names_from_config() -> None:
    cfg = parse_label_config(ner_config(["PER", "ORG"], from_name="ents", to_name="doc", text_key="body"))
    pred = prediction_to_ls(12, [Span(0, 11, "PER"), Span(21, 30, "ORG")], cfg, model_version="r3", score=0.25,
                            text=TEXT)
    assert pred == {"task": 12, "model_version": "r3", "score": 0.25, "result": [
        {"from_name": "ents", "to_name": "doc", "type": "labels",
         "value": {"start": 0, "end": 11, "text": "Alice Smith", "labels": ["PER"]}},
        {"from_name": "ents", "to_name": "doc", "type": "labels",
         "value": {"start": 21, "end": 30, "text": "Acme Corp", "labels": ["ORG"]}}]}


def test_classification_prediction_shape() -> None:
    pred = prediction_to_ls(3, ["Positive"], CLS, model_version="m1", score=0)
    assert pred == {"task": 3, "model_version": "m1", "score": 0.0, "result": [
        {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Positive"]}}]}
    assert prediction_result([], CLS) == []


def test_prediction_round_trips_through_annotation_conversion() -> None:
    spans = (Span(0, 5, "PER"), Span(35, 40, "LOC"))
    ex = annotation_to_example(prediction_result(spans, NER, text=TEXT), item_id="i", text=TEXT, config=NER)
    assert isinstance(ex, Example) and ex.spans == spans


def test_prediction_aliases_are_written() -> None:
    xml = '<View><Labels name="l" toName="t"><Label value="Person" alias="PER"/></Labels><Text name="t" value="$x"/>' \
          '</View>'
    cfg = parse_label_config(xml)
    res = prediction_result([Span(0, 5, "Person")], cfg, text=TEXT)
    assert res[0]["value"]["labels"] == ["PER"]
    ex = annotation_to_example(res, item_id="i", text=TEXT, config=cfg)
    assert isinstance(ex, Example) and ex.spans == (Span(0, 5, "Person"),)


def test_prediction_errors() -> None:
    with pytest.raises(UnknownLabelError):
        prediction_result([Span(0, 5, "MISC")], NER, text=TEXT)
    with pytest.raises(AlignmentError):
        prediction_result([Span(0, 99, "PER")], NER, text=TEXT)
    with pytest.raises(AlignmentError):
        prediction_result([Span(0, 5, "PER")], NER)
    with pytest.raises(UnknownLabelError):
        prediction_result(["nope"], CLS)
    with pytest.raises(ValueError):
        prediction_to_ls(1, ["Positive"], CLS, model_version="", score=0.1)
    with pytest.raises(ValueError):
        prediction_to_ls(1, ["Positive"], CLS, model_version="m", score=float("nan"))


# ---------------------------------------------------------------------------- webhooks
def test_parse_annotation_created() -> None:
    ev = parse_webhook(ANNOTATION_CREATED)
    assert isinstance(ev, AnnotationEvent)
    assert (ev.action, ev.project_ls_id, ev.task_id, ev.annotation_id) == ("ANNOTATION_CREATED", 7, 11, 1)
    assert ev.updated_at == "2026-11-25T07:58:31.816600Z" and ev.completed_by == 1 and not ev.was_cancelled
    assert ev.item_id == "doc-3" and ev.task_data["text"] == "Great product"
    ex = ev.to_example(CLS)
    assert isinstance(ex, Example) and ex.labels == ("Positive",) and ex.item_id == "doc-3"
    assert ex.meta["ls_updated_at"] == ev.updated_at


def test_parse_annotation_updated_and_cancelled() -> None:
    payload = copy.deepcopy(ANNOTATION_CREATED)
    payload["action"] = "ANNOTATION_UPDATED"
    payload["annotation"]["was_cancelled"] = True
    payload["annotation"]["result"] = []
    ev = parse_webhook(payload)
    assert isinstance(ev, AnnotationEvent) and ev.action == "ANNOTATION_UPDATED" and ev.was_cancelled
    assert isinstance(ev.to_example(CLS), Skipped)


def test_annotation_event_without_item_id_cannot_become_an_example() -> None:
    payload = copy.deepcopy(ANNOTATION_CREATED)
    del payload["task"]["data"]["item_id"]
    ev = parse_webhook(payload)
    assert isinstance(ev, AnnotationEvent) and ev.item_id is None
    with pytest.raises(WebhookPayloadError, match="item_id"):
        ev.to_example(CLS)


def test_parse_bulk_annotations_created() -> None:
    a2 = {**ANNOTATION_CREATED["annotation"], "id": 2, "task": 12, "result": [choice_item("Negative")]}
    payload = {"action": "ANNOTATIONS_CREATED", "annotation": [ANNOTATION_CREATED["annotation"], a2],
               "task": [ANNOTATION_CREATED["task"], {"id": 12, "data": {"text": "meh", "item_id": "doc-4"}}],
               "project": PROJECT}
    ev = parse_webhook(payload)
    assert isinstance(ev, AnnotationsCreated) and ev.project_ls_id == 7
    assert [(e.annotation_id, e.task_id, e.item_id) for e in ev.events] == [(1, 11, "doc-3"), (2, 12, "doc-4")]


def test_parse_deleted_training_and_ignored() -> None:
    ev = parse_webhook({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 5}, {"id": 6}], "project": PROJECT})
    assert ev == AnnotationsDeleted(7, (5, 6))
    assert parse_webhook({"action": "START_TRAINING", "project": PROJECT}) == StartTraining(7)
    assert parse_webhook({"action": "TASKS_CREATED", "tasks": [], "project": PROJECT}) == Ignored("TASKS_CREATED", 7)
    assert parse_webhook({"action": "PROJECT_UPDATED", "project": PROJECT}) == Ignored("PROJECT_UPDATED", 7)
    assert parse_webhook({"action": "SOMETHING_NEW"}) == Ignored("SOMETHING_NEW", None, known=False)


@pytest.mark.parametrize(("payload", "message"), [
    ([1, 2], "JSON object"),
    ({"annotation": {}}, "action"),
    ({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 2}}, "project"),
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1}}, "no annotation"),
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": "x", "task": 2}}, "annotation.id"),
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 1}}, "task id"),
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 1, "task": 2, "result": "x"}},
     "result"),
    ({"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": [{"pk": 3}]}, "annotations"),
    ({"action": "ANNOTATIONS_DELETED", "project": {"id": 1}}, "annotations"),
    ({"action": "START_TRAINING"}, "project"),
])
def test_malformed_payloads(payload: Any, message: str) -> None:
    with pytest.raises(WebhookPayloadError, match=message):
        parse_webhook(payload)
