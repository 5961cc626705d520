from __future__ import annotations

from datetime import timedelta

import pytest

from al_loop.config import LoopConfig, TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConflictError
from al_loop.rounds import PredictService, RoundService
from al_loop.store import Store
from al_loop.store.records import payload_from_example
from al_loop.types import Example, ItemId, Span
from tests.core.fakes import FakeModel

WORDS = ["good", "great", "fine", "bad", "awful", "poor"]


def _cls_examples(n: int) -> list[Example]:
    out = []
    for i in range(n):
        w = WORDS[i % len(WORDS)]
        out.append(Example(ItemId(f"i{i}"), f"{w} item number {i}", labels=("pos" if w in WORDS[:3] else "neg",)))
    return out


@pytest.fixture
def setup(tmp_path, database_url):
    store = Store(database_url)
    schema = LabelSchema.build("classification", ["pos", "neg"])
    p = store.create_project("p", schema, loop=LoopConfig(strategy="least_confidence", batch_size=4, seed_size=6))
    data = _cls_examples(40)
    store.add_items(p.id, data, "pool")
    store.add_items(
        p.id, [Example(ItemId(f"t{e.item_id}"), e.text + " test", labels=e.labels) for e in data[:12]], "test"
    )
    service = RoundService(store, FakeModel, tmp_path / "artifacts")
    return store, p, service, {e.item_id: payload_from_example(e) for e in data}


def _label_selected(store: Store, project_id: int, round_id: int, gold) -> list[str]:
    chosen = [s.item_id for s in store.get_scores(round_id, selected_only=True)]
    for item in chosen:
        store.record_label(project_id, item, f"o:{item}", payload=gold[item], source="oracle")
    return chosen


def test_cold_start_then_training_rounds(setup) -> None:
    store, p, service, gold = setup
    r0 = service.create_round(p.id)
    assert r0.batch_size == 6  # seed size for the first round
    out = service.run_round(r0.id)
    assert out.ran and out.round.status == "succeeded", out.round.error
    assert out.round.model_version_id is None and "cold" in out.round.version_tag
    scores = store.get_scores(r0.id)
    assert len(scores) == 40 and [s.rank for s in scores] == list(range(40))
    assert sum(s.selected for s in scores) == 6
    _label_selected(store, p.id, r0.id, gold)

    r1 = service.create_round(p.id)
    assert r1.batch_size == 4
    done = service.run_round(r1.id).round
    assert done.status == "succeeded", done.error
    assert done.n_labels == 6 and done.model_version_id is not None
    assert done.metrics["eval_set"] == "test (12)" and 0.0 <= done.metrics["score"] <= 1.0
    assert set(done.timings) >= {"snapshot", "train", "evaluate", "publish", "score", "select", "total"}
    version = store.get_version(done.model_version_id)
    assert version.status == "promoted" and version.name == done.version_tag
    assert (store.get_project(p.id).schema.hash[:8]) in version.name
    scored = store.get_scores(r1.id)
    assert len(scored) == 34  # pool minus labelled
    assert all(s.prediction and "labels" in s.prediction for s in scored)
    assert done.report["top_uncertain"][0]["item_id"] == scored[0].item_id
    # redelivery of a finished round does nothing
    again = service.run_round(r1.id)
    assert not again.ran and again.round.status == "succeeded"


def test_selected_items_are_least_confident_first(setup) -> None:
    store, p, service, gold = setup
    r0 = service.run_round(service.create_round(p.id).id).round
    _label_selected(store, p.id, r0.id, gold)
    r1 = service.run_round(service.create_round(p.id).id).round
    selected = store.get_scores(r1.id, selected_only=True)
    others = [s for s in store.get_scores(r1.id) if not s.selected]
    max_conf_selected = max(s.prediction["confidence"] for s in selected)
    assert max_conf_selected <= min(s.prediction["confidence"] for s in others) + 1e-9


def test_round_without_selection_trains_and_publishes_but_scores_nothing(setup) -> None:
    store, p, service, gold = setup
    r0 = service.run_round(service.create_round(p.id).id, select=False).round
    assert len(store.get_scores(r0.id, selected_only=True)) == 6  # a cold start always selects
    _label_selected(store, p.id, r0.id, gold)
    done = service.run_round(service.create_round(p.id).id, select=False).round
    assert done.status == "succeeded", done.error
    assert done.model_version_id is not None and done.metrics["eval_set"] == "test (12)"
    assert store.get_scores(done.id) == [] and "score" not in done.timings


def test_rounds_are_deterministic(new_database_url) -> None:
    picks = []
    for _ in range(2):
        store = Store(new_database_url())
        p = store.create_project(
            "p",
            LabelSchema.build("classification", ["pos", "neg"]),
            loop=LoopConfig(strategy="random", batch_size=4, seed_size=5, seed=3),
        )
        store.add_items(p.id, _cls_examples(30))
        service = RoundService(store, FakeModel, None)
        r = service.run_round(service.create_round(p.id).id).round
        picks.append([s.item_id for s in store.get_scores(r.id, selected_only=True)])
    assert picks[0] == picks[1]


def test_user_error_marks_round_failed_without_crashing(setup) -> None:
    store, p, service, _gold = setup
    r0 = service.run_round(service.create_round(p.id).id).round
    item = store.get_scores(r0.id, selected_only=True)[0].item_id
    store.record_label(p.id, item, "bad", payload={"labels": ["unknown-label"]}, source="api")
    r1 = service.run_round(service.create_round(p.id).id).round
    assert r1.status == "failed" and "unknown label" in r1.error
    # the project is not stuck: a new round can be created
    assert service.create_round(p.id).index == 2


def test_crash_marks_round_failed_and_propagates(setup) -> None:
    store, p, _, gold = setup

    class Boom(FakeModel):
        def fit(self, examples, *, progress=None):
            raise RuntimeError("GPU on fire")

    service = RoundService(store, Boom, None)
    r0 = service.run_round(service.create_round(p.id).id).round
    _label_selected(store, p.id, r0.id, gold)
    r1 = service.create_round(p.id)
    with pytest.raises(RuntimeError):
        service.run_round(r1.id)
    assert store.get_round(r1.id).status == "failed"


def test_running_round_of_live_other_worker_conflicts(setup) -> None:
    store, p, service, _ = setup
    r = service.create_round(p.id)
    store.claim_round(r.id, "other-worker", timedelta(minutes=10))
    with pytest.raises(ConflictError):
        service.run_round(r.id)
    # once the other worker's heartbeat is stale, this worker takes the round over
    service.stale_after = timedelta(seconds=-1)
    assert service.run_round(r.id).round.status == "succeeded"


def test_policy_should_start_round(setup) -> None:
    store, p, service, gold = setup
    store.update_project(p.id, loop=LoopConfig(batch_size=4, seed_size=6, retrain_every=3))
    assert not service.should_start_round(p.id)
    for i in range(3):
        store.record_label(p.id, f"i{i}", f"k{i}", payload=gold[f"i{i}"], source="api")
    assert service.should_start_round(p.id)
    service.create_round(p.id)
    assert not service.should_start_round(p.id)  # one is active


def test_promote_rollback_and_predict(setup) -> None:
    store, p, service, gold = setup
    predictor = PredictService(store, FakeModel)
    with pytest.raises(ConflictError):
        predictor.predict(p.id, ["good"])
    r = service.run_round(service.create_round(p.id).id).round
    _label_selected(store, p.id, r.id, gold)
    r1 = service.run_round(service.create_round(p.id).id).round
    _label_selected(store, p.id, r1.id, gold)
    r2 = service.run_round(service.create_round(p.id).id).round
    assert store.promoted_version(p.id).id == r2.model_version_id
    res = predictor.predict(p.id, ["good thing", "awful thing", ""])
    assert res.model_version == store.promoted_version(p.id).name and len(res.predictions) == 3
    back = service.rollback(p.id)
    assert back.id == r1.model_version_id
    assert predictor.predict(p.id, ["good"]).model_version == back.name
    service.promote(p.id, r2.model_version_id)
    assert store.promoted_version(p.id).id == r2.model_version_id


def test_ner_round(database_url) -> None:
    store = Store(database_url)
    schema = LabelSchema.build("ner", ["Disease"])
    p = store.create_project("ner", schema, loop=LoopConfig(strategy="mnlp", batch_size=3, seed_size=4))
    data = [
        Example(
            ItemId(f"n{i}"),
            f"patients with cancer type {i} and flu",
            spans=(
                Span(14, 20, "Disease"),
                Span(
                    len(f"patients with cancer type {i} and "), len(f"patients with cancer type {i} and flu"), "Disease"
                ),
            ),
        )
        for i in range(12)
    ]
    store.add_items(p.id, data)
    service = RoundService(store, FakeModel, None)
    r0 = service.run_round(service.create_round(p.id).id).round
    gold = {e.item_id: payload_from_example(e) for e in data}
    _label_selected(store, p.id, r0.id, gold)
    r1 = service.run_round(service.create_round(p.id).id).round
    assert r1.status == "succeeded", r1.error
    assert r1.n_tokens == 4 * 7
    pred = store.get_scores(r1.id)[0].prediction
    assert pred["spans"] and pred["spans"][0]["label"] == "Disease"


def _labelled_rounds(store: Store, path, training: TrainingConfig, n_items: int, n_rounds: int) -> int:
    """A 2-class project (seed 6, batch 4) whose first ``n_rounds`` rounds ran, each batch labelled; its id."""
    p = store.create_project(
        "p",
        LabelSchema.build("classification", ["pos", "neg"]),
        loop=LoopConfig(strategy="entropy", batch_size=4, seed_size=6),
        training=training,
    )
    data = _cls_examples(n_items)
    store.add_items(p.id, data)
    gold = {e.item_id: payload_from_example(e) for e in data}
    service = RoundService(store, FakeModel, path)
    for _ in range(n_rounds):
        r = service.run_round(service.create_round(p.id).id).round
        assert r.status == "succeeded", r.error
        _label_selected(store, p.id, r.id, gold)
    return p.id


def test_warm_start_uses_previous_artifact(tmp_path, database_url) -> None:
    store = Store(database_url)
    pid = _labelled_rounds(store, tmp_path / "art", TrainingConfig(warm_start=True, learner="finetune"), 30, 3)
    # round 1 starts from the base model, round 2 from round 1's promoted artifact
    trained = [m for m in FakeModel.created if m.fit_calls][-2:]
    assert trained[0].init_from is None
    assert str(trained[1].init_from).endswith(store.list_versions(pid)[0].name)


def test_warm_start_refits_from_the_base_model_each_time_the_labels_double(tmp_path, database_url) -> None:
    """warm_refit 2: rounds at 6, 10, 14, 18 labels fit from the base model at 6 and 14 (>= 2 x 6), warm-start
    at 10 and 18 (< 2 x 14); the train report records which, and the labels of the last fit from the base."""
    store = Store(database_url)
    training = TrainingConfig(warm_start=True, warm_refit=2.0, learner="finetune")
    pid = _labelled_rounds(store, tmp_path / "art", training, 40, 5)
    reports = [v.train_report for v in store.list_versions(pid)]
    assert [t["auto"]["n_labels"] for t in reports] == [6, 10, 14, 18]
    assert [t["warm_started"] for t in reports] == [False, True, False, True]
    assert [t["scratch_labels"] for t in reports] == [6, 6, 14, 14]
    assert "refit from the base model" in reports[2]["auto"]["warm"]


def test_warm_new_share_trains_at_least_the_new_labels_share_of_the_schedule(tmp_path, database_url) -> None:
    """warm_new_share: rounds at 6, 10, 14, 18 labels warm-start from 6, 10, 14 labels: the new labels' shares
    0.4, 0.29, 0.22; above warm_schedule 0.3 only the first is raised (to 0.4), the others keep 0.3."""
    store = Store(database_url)
    training = TrainingConfig(warm_start=True, warm_schedule=0.3, warm_new_share=True, learner="finetune")
    pid = _labelled_rounds(store, tmp_path / "art", training, 40, 5)
    reports = [v.train_report for v in store.list_versions(pid)]
    assert [t["warm_started"] for t in reports] == [False, True, True, True]
    assert [t["auto"].get("warm_schedule") for t in reports] == [None, 0.4, None, None]
    warm = [m for m in FakeModel.created if m.fit_calls and m.init_from is not None][-3:]
    assert [m.config.warm_schedule for m in warm] == [0.4, 0.3, 0.3]
