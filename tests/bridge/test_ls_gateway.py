"""LabelStudioGateway against a real Label Studio 1.23.2 (marker ``integration``).

One server per session (fixture ``label_studio`` in conftest.py); each test makes its
own projects. The retry / server-environment tests at the bottom need no server.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from al_loop.types import Example, ItemId, Span
from annotator_bridge.labelstudio.config import LabelConfig, classification_config, ner_config
from annotator_bridge.labelstudio.connection import (
    LabelStudioNotFound,
    LabelStudioRequestError,
    LabelStudioUnavailable,
)
from annotator_bridge.labelstudio.convert import (
    AnnotationEvent,
    AnnotationsDeleted,
    Skipped,
    parse_webhook,
    prediction_result,
    prediction_to_ls,
)
from annotator_bridge.labelstudio.gateway import LabelStudioGateway
from annotator_bridge.labelstudio.local import free_port
from annotator_bridge.labelstudio.projects import UNCERTAINTY_SAMPLING
from annotator_bridge.labelstudio.server import LabelStudioServer

from .conftest import Receiver

integration = pytest.mark.integration
SECRET_HEADER = "X-AL-Loop-Secret"
PEOPLE = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj"]
ORGS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark"]


def ner_items(n: int, prefix: str) -> list[tuple[ItemId, str, dict[str, Any]]]:
    return [(ItemId(f"{prefix}-{i}"), f"{PEOPLE[i % len(PEOPLE)]} joined {ORGS[i % len(ORGS)]} in year {2000 + i}.",
             {"source": "test", "row": i}) for i in range(n)]


def ner_spans(text: str) -> tuple[Span, ...]:
    person = text.split(" ")[0]
    org_start = text.index(" joined ") + len(" joined ")
    org_end = text.index(" in year")
    return (Span(0, len(person), "PER"), Span(org_start, org_end, "ORG"))


def make_project(gw: LabelStudioGateway, title: str, label_config: str, items: list[Any]) -> tuple[int, LabelConfig,
                                                                                                  dict[ItemId, int]]:
    project = gw.create_project(title, label_config)
    mapping = gw.import_tasks(project.id, items)
    return project.id, project.config, mapping


# ---------------------------------------------------------------------------- projects and tasks
@integration
def test_projects_configs_and_task_import(ls_gateway: LabelStudioGateway, label_studio: LabelStudioServer) -> None:
    assert ls_gateway.whoami()["email"] == label_studio.username
    ner = ls_gateway.create_project("gw ner", ner_config(["PER", "ORG", "LOC"]))
    cls = ls_gateway.create_project("gw cls", classification_config(["neg", "pos"], multi_label=True))
    assert ner.sampling == "Sequential sampling" and ner.model_version == ""
    ner_cfg, cls_cfg = ls_gateway.project_config(ner.id), ls_gateway.project_config(cls.id)
    assert ner_cfg.schema.labels == ("LOC", "ORG", "PER") and ner_cfg.from_name == "label"
    assert cls_cfg.schema.multi_label and cls_cfg.schema.labels == ("neg", "pos")

    items = ner_items(25, "imp")
    mapping = ls_gateway.import_tasks(ner.id, items, chunk_size=10, verify=True)  # ids returned == ids listed
    assert list(mapping) == [i for i, _, _ in items] and len(set(mapping.values())) == 25
    tasks = {t["id"]: t for t in ls_gateway.list_tasks(ner.id, page_size=7)}
    assert len(tasks) == 25
    for item_id, text, meta in items:
        task = tasks[mapping[item_id]]
        assert task["data"] == {"text": text, "item_id": item_id} and task["meta"] == meta

    # importing again is idempotent (by item id): same ids, no new tasks
    again = ls_gateway.import_tasks(ner.id, [*items[:3], (ItemId("imp-new"), "Zed joined Acme in year 1.", None)],
                                    verify=True)
    assert {k: again[k] for k in list(again)[:3]} == {i: mapping[i] for i, _, _ in items[:3]}
    assert len(list(ls_gateway.list_tasks(ner.id))) == 26

    with pytest.raises(LabelStudioNotFound, match="HTTP 404"):
        ls_gateway.get_project(999_999)
    with pytest.raises(LabelStudioRequestError, match="HTTP 400"):
        ls_gateway.create_project("x", ner_config(["PER"]))  # title shorter than 3 characters


@integration
def test_tasks_after_an_id_and_the_task_count(ls_gateway: LabelStudioGateway) -> None:
    """Reconcile's incremental listing: the tasks whose id is above a known one, and the project's task count."""
    items = [(ItemId(f"after-{i}"), f"review number {i}", None) for i in range(7)]
    pid, _, mapping = make_project(ls_gateway, "gw tasks after", classification_config(["neg", "pos"]), items)
    ids = sorted(mapping.values())
    assert ls_gateway.task_count(pid) == 7
    after = list(ls_gateway.tasks_after(pid, ids[3], page_size=2))
    assert [t["id"] for t in after] == ids[4:]
    assert after[0]["data"]["item_id"] == "after-4"
    assert list(ls_gateway.tasks_after(pid, ids[-1])) == []


# ---------------------------------------------------------------------------- ordering
@integration
def test_uncertainty_sampling_serves_lowest_score_first(ls_gateway: LabelStudioGateway) -> None:
    items = ner_items(12, "unc")
    pid, cfg, mapping = make_project(ls_gateway, "gw uncertainty", ner_config(["PER", "ORG", "LOC"]), items)
    rng = random.Random(7)
    scores = [round(0.05 + 0.07 * k, 2) for k in range(len(items))]
    rng.shuffle(scores)
    text_of = {i: t for i, t, _ in items}
    score_of = {mapping[i]: s for (i, _, _), s in zip(items, scores)}
    preds = [prediction_to_ls(mapping[i], ner_spans(t), cfg, model_version="ner-r1", score=score_of[mapping[i]],
                              text=t) for i, t, _ in items]
    assert ls_gateway.import_predictions(pid, preds, model_version="ner-r1") == len(items)
    assert ls_gateway.model_versions(pid) == {"ner-r1": len(items)}
    project = ls_gateway.set_model_version(pid, "ner-r1")
    assert (project.model_version, project.sampling) == ("ner-r1", UNCERTAINTY_SAMPLING)

    expected = sorted(score_of, key=score_of.__getitem__)
    served = []
    for _ in range(6):
        task = ls_gateway.next_task(pid)
        assert task is not None and task["queue"] == "Active learning or random queue"
        assert [p["model_version"] for p in task["predictions"]] == ["ner-r1"]
        served.append(task["id"])
        item = ItemId(task["data"]["item_id"])
        result = prediction_result(ner_spans(text_of[item]), cfg, text=text_of[item])
        ls_gateway.create_annotation(task["id"], result, lead_time=1.5)
    assert served == expected[:6], f"served scores {[score_of[t] for t in served]}"

    # the annotated tasks come back for reconciliation, with their item ids and spans
    annotated = list(ls_gateway.list_annotated_tasks(pid))
    assert sorted(t.task_id for t in annotated) == sorted(served)
    for t in annotated:
        assert t.item_id is not None and t.text == text_of[t.item_id] and len(t.annotations) == 1
        (ex,) = t.examples(cfg)
        assert isinstance(ex, Example) and ex.spans == ner_spans(t.text)
        assert ex.meta["ls_task_id"] == t.task_id


@integration
def test_predictions_of_a_version_are_listed_and_deleted(ls_gateway: LabelStudioGateway) -> None:
    """The push's repair path: list one version's predictions (id, task) and delete one, twice is no error."""
    items = [(ItemId(f"dup-{i}"), f"review number {i}", None) for i in range(4)]
    pid, cfg, mapping = make_project(ls_gateway, "gw duplicates", classification_config(["neg", "pos"]), items)
    tasks = list(mapping.values())
    preds = [prediction_to_ls(t, ["pos"], cfg, model_version="v1", score=0.5) for t in tasks]
    ls_gateway.import_predictions(pid, preds + preds[:2], model_version="v1")  # two tasks twice
    ls_gateway.import_predictions(pid, [prediction_to_ls(tasks[0], ["neg"], cfg, model_version="v0", score=0.1)])
    listed = ls_gateway.predictions_of_version(pid, "v1")
    assert sorted(task for _, task in listed) == sorted(tasks + tasks[:2])
    assert len({pred_id for pred_id, _ in listed}) == 6
    doomed = max(pred_id for pred_id, task in listed if task == tasks[0])
    ls_gateway.delete_prediction(doomed)
    ls_gateway.delete_prediction(doomed)  # already gone: not an error
    assert ls_gateway.model_versions(pid) == {"v1": 5, "v0": 1}
    assert doomed not in {pred_id for pred_id, _ in ls_gateway.predictions_of_version(pid, "v1")}


@integration
def test_mismatched_model_version_does_not_follow_scores(ls_gateway: LabelStudioGateway) -> None:
    items = [(ItemId(f"mm-{i}"), f"review number {i}", None) for i in range(20)]
    # PATCHing a model_version that no prediction/backend carries is refused (400), but creation is not
    # validated: this is the state a stale or mistyped version leaves behind.
    project = ls_gateway.create_project("gw mismatch", classification_config(["neg", "pos"]), model_version="m2",
                                        sampling=UNCERTAINTY_SAMPLING)
    pid, cfg = project.id, project.config
    mapping = ls_gateway.import_tasks(pid, items)
    with pytest.raises(LabelStudioRequestError, match="Model version doesn't exist"):
        ls_gateway.set_model_version(pid, "m3")
    scores = {mapping[i]: (k * 7 % 20) / 20 for k, (i, _, _) in enumerate(items)}
    ls_gateway.import_predictions(pid, [prediction_to_ls(t, ["pos"], cfg, model_version="m1", score=s)
                                        for t, s in scores.items()])
    assert ls_gateway.get_project(pid).model_version == "m2"  # predictions carry m1: their scores are ignored
    # predictions_score only averages predictions of the project's model_version: null for every task
    listed = list(ls_gateway.list_tasks(pid, fields="all"))
    assert listed and all(t.get("predictions_score") is None for t in listed)
    served = []
    for _ in range(4):
        task = ls_gateway.next_task(pid)
        assert task is not None and task["queue"] == "Active learning or random queue"  # same text, random pick
        served.append(task["id"])
        ls_gateway.create_annotation(task["id"], prediction_result(["neg"], cfg))
    lowest = sorted(scores, key=scores.__getitem__)[:4]
    assert served != lowest  # random fallback; P(random == ascending order) ~ 1e-5
    # fixing the project's model_version restores score order among the rest
    ls_gateway.set_model_version(pid, "m1")
    rest = sorted((t for t in scores if t not in served), key=scores.__getitem__)
    task = ls_gateway.next_task(pid)
    assert task is not None and task["id"] == rest[0]


# ---------------------------------------------------------------------------- webhooks, ML backend, annotators
@integration
def test_webhook_with_secret_header_reaches_receiver(ls_gateway: LabelStudioGateway, receiver: Receiver) -> None:
    items = ner_items(3, "wh")
    pid, cfg, mapping = make_project(ls_gateway, "gw webhook", ner_config(["PER", "ORG"]), items)
    url = receiver.url + "/hook"
    hook = ls_gateway.add_webhook(pid, url, headers={SECRET_HEADER: "s3cret"})
    ls_gateway.add_webhook(pid, url, headers={SECRET_HEADER: "s3cret"})  # idempotent: updates, no second hook
    hooks = ls_gateway.list_webhooks(pid)
    assert [h["id"] for h in hooks] == [hook["id"]] and hooks[0]["headers"] == {SECRET_HEADER: "s3cret"}

    item_id, text, _ = items[1]
    ann = ls_gateway.create_annotation(mapping[item_id], prediction_result(ner_spans(text), cfg, text=text))
    # delivery is synchronous: the event is there when the API call returns
    (headers, body), = receiver.posts("/hook", "ANNOTATION_CREATED")
    assert headers.get(SECRET_HEADER) == "s3cret"
    event = parse_webhook(body)
    assert isinstance(event, AnnotationEvent)
    assert (event.project_ls_id, event.task_id, event.annotation_id, event.item_id) == (pid, mapping[item_id],
                                                                                       ann["id"], item_id)
    ex = event.to_example(cfg)
    assert isinstance(ex, Example) and ex.spans == ner_spans(text)

    skip = ls_gateway.create_annotation(mapping[items[2][0]], [], was_cancelled=True)
    skipped = parse_webhook(receiver.posts("/hook", "ANNOTATION_CREATED")[-1][1])
    assert isinstance(skipped, AnnotationEvent) and skipped.annotation_id == skip["id"]
    assert isinstance(skipped.to_example(cfg), Skipped)

    ls_gateway.client.annotations.delete(id=ann["id"])
    (headers, body), = receiver.posts("/hook", "ANNOTATIONS_DELETED")
    assert headers.get(SECRET_HEADER) == "s3cret"
    assert parse_webhook(body) == AnnotationsDeleted(pid, (ann["id"],))


@integration
def test_ml_backend_gets_one_webhook_with_secret(ls_gateway: LabelStudioGateway, receiver: Receiver) -> None:
    items = [(ItemId(f"ml-{i}"), f"text {i}", None) for i in range(3)]
    pid, cfg, mapping = make_project(ls_gateway, "gw ml backend", classification_config(["neg", "pos"]), items)
    ml = ls_gateway.connect_ml_backend(pid, receiver.url + "/ml", title="v1", webhook_headers={SECRET_HEADER: "k"})
    assert ml["url"] == receiver.url + "/ml"
    assert any(p == "/ml/setup" for m, p, _, _ in receiver.calls)
    hooks = ls_gateway.list_webhooks(pid)
    assert [(h["url"], h["headers"]) for h in hooks] == [(receiver.url + "/ml/webhook", {SECRET_HEADER: "k"})]
    assert ls_gateway.get_project(pid).model_version == "v1"  # empty model_version := backend title
    # connecting again (same or new title) does not add a second backend or webhook
    again = ls_gateway.connect_ml_backend(pid, receiver.url + "/ml", title="v1", webhook_headers={SECRET_HEADER: "k"})
    assert again["id"] == ml["id"]
    ml = ls_gateway.connect_ml_backend(pid, receiver.url + "/ml", title="v2", webhook_headers={SECRET_HEADER: "k"})
    assert ml["title"] == "v2"
    backends = ls_gateway._raw("GET", "api/ml/", params={"project": pid})
    assert [b["title"] for b in backends] == ["v2"]
    assert len(ls_gateway.list_webhooks(pid)) == 1

    ls_gateway.create_annotation(mapping[ItemId("ml-0")], prediction_result(["pos"], cfg))
    got = receiver.posts("/ml/webhook", "ANNOTATION_CREATED")
    assert len(got) == 1 and got[0][0].get(SECRET_HEADER) == "k"
    ls_gateway.client.ml.train(id=int(ml["id"]))
    (_, body), = receiver.wait_for("/ml/webhook", "START_TRAINING")
    assert parse_webhook(body).project_ls_id == pid  # type: ignore[union-attr]


@integration
def test_annotator_token_labels_as_another_user(ls_gateway: LabelStudioGateway,
                                                label_studio: LabelStudioServer) -> None:
    items = [(ItemId(f"an-{i}"), f"text {i}", None) for i in range(4)]
    pid, cfg, mapping = make_project(ls_gateway, "gw annotator", classification_config(["neg", "pos"]), items)
    token = label_studio.annotator_token("annotator1@example.com")
    assert token != label_studio.api_key
    me = ls_gateway.whoami(token=token)
    assert me["email"] == "annotator1@example.com"
    task = ls_gateway.next_task(pid, token=token)
    assert task is not None and task["id"] in mapping.values()
    ann = ls_gateway.create_annotation(task["id"], prediction_result(["neg"], cfg), token=token)
    assert ann["completed_by"] == me["id"] != ls_gateway.whoami()["id"]
    (t,) = ls_gateway.list_annotated_tasks(pid)
    assert t.annotations[0].completed_by == me["id"]


# ---------------------------------------------------------------------------- no server needed
def test_closed_port_raises_unavailable_after_retries(caplog: pytest.LogCaptureFixture) -> None:
    gw = LabelStudioGateway(f"http://127.0.0.1:{free_port()}", "token-123456", timeout=2, retries=3, backoff=0.01)
    with caplog.at_level(logging.WARNING), pytest.raises(LabelStudioUnavailable, match="after 4 attempt"):
        gw.get_project(1)
    assert sum("retry" in r.getMessage() for r in caplog.records) == 3
    with pytest.raises(LabelStudioUnavailable):
        gw.next_task(1)


class _Flaky:
    """Answers 503 ``fail`` times, then 200 (or 400 when ``status`` says so)."""

    def __init__(self, fail: int, status: int = 200) -> None:
        self.hits = 0
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                flaky.hits += 1
                code = 503 if flaky.hits <= fail else status
                body = json.dumps({"detail": "nope"} if code >= 400 else {"id": 1, "email": "a@b.c"}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def flaky() -> Iterator[type[_Flaky]]:
    made: list[_Flaky] = []

    def make(fail: int, status: int = 200) -> _Flaky:
        f = _Flaky(fail, status)
        made.append(f)
        return f

    yield make  # type: ignore[misc]
    for f in made:
        f.server.shutdown()
        f.server.server_close()


def test_5xx_is_retried_then_succeeds_or_gives_up(flaky: Any) -> None:
    ok = flaky(2)
    gw = LabelStudioGateway(ok.url, "token-123456", retries=3, backoff=0.01)
    assert gw.whoami()["email"] == "a@b.c" and ok.hits == 3
    down = flaky(99)
    gw = LabelStudioGateway(down.url, "token-123456", retries=2, backoff=0.01)
    with pytest.raises(LabelStudioUnavailable, match="HTTP 503"):
        gw.whoami()
    assert down.hits == 3
    bad = flaky(0, status=403)
    gw = LabelStudioGateway(bad.url, "token-123456", retries=2, backoff=0.01)
    with pytest.raises(LabelStudioRequestError, match="HTTP 403: nope") as info:
        gw.whoami()
    assert info.value.status_code == 403 and bad.hits == 1  # 4xx is not retried


def test_server_environment_is_hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name, value in {"HOST": "example.org", "PORT": "1", "DEBUG": "*", "USERNAME": "x", "PASSWORD": "y",
                        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "false", "HEARTEX_X": "1"}.items():
        monkeypatch.setenv(name, value)
    env = LabelStudioServer(tmp_path / "venv", webhook_timeout=3)._env(tmp_path, 8123)
    for name in ("HOST", "PORT", "DEBUG", "USERNAME", "PASSWORD", "HEARTEX_X"):
        assert name not in env
    assert env["LABEL_STUDIO_HOST"] == "http://127.0.0.1:8123"
    assert env["LABEL_STUDIO_SENTRY_DSN"] == "" and env["LABEL_STUDIO_COLLECT_ANALYTICS"] == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true" and env["LABEL_STUDIO_WEBHOOK_TIMEOUT"] == "3"
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "false" and env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
