"""Stopping criteria recorded by real rounds (RoundService with the word-vote FakeModel), the fixed stop set,
``loop.pause_when_stable`` and ``al-loop simulate``'s stopping summary."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import ClassVar

import pytest

from al_loop.config import LoopConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError
from al_loop.rounds import RoundService
from al_loop.rounds.stopping import CRITERIA, cohen_kappa
from al_loop.simulate import SimulationSpec, run_simulation
from al_loop.store import Store
from al_loop.store.records import payload_from_example
from al_loop.types import Example, ItemId, Span, TaskKind
from tests.core.fakes import FakeModel

WORDS = ["good", "great", "fine", "bad", "awful", "poor"]


def _cls_examples(n: int) -> list[Example]:
    return [Example(ItemId(f"i{i}"), f"{WORDS[i % 6]} item number {i} {WORDS[(i * 5) % 6]}",
                    labels=("pos" if WORDS[i % 6] in WORDS[:3] else "neg",)) for i in range(n)]


def _project(store: Store, tmp_path: Path, **loop: object) -> tuple[int, RoundService, dict[str, dict]]:
    schema = LabelSchema.build("classification", ["pos", "neg"])
    cfg = LoopConfig(**{"strategy": "least_confidence", "batch_size": 4, "seed_size": 6, "retrain_every": 0,
                        "stop_set_size": 15, **loop})
    p = store.create_project("p", schema, loop=cfg)
    data = _cls_examples(60)
    store.add_items(p.id, data, "pool")
    store.add_items(p.id, [Example(ItemId(f"t{e.item_id}"), e.text + " test", labels=e.labels) for e in data[:12]],
                    "test")
    return p.id, RoundService(store, FakeModel, tmp_path / "artifacts"), {e.item_id: payload_from_example(e)
                                                                           for e in data}


def _run(store: Store, service: RoundService, pid: int, gold: dict[str, dict], *, label: bool = True):
    rnd = service.run_round(service.create_round(pid).id).round
    assert rnd.status == "succeeded", rnd.error
    if label:
        for s in store.get_scores(rnd.id, selected_only=True):
            store.record_label(pid, s.item_id, f"o:{s.item_id}", payload=gold[s.item_id], source="oracle")
    return rnd


def _codes(rnd) -> dict[str, list[int]]:
    stored = rnd.report["stop_set"]
    return {i: c for i, c in zip(stored["ids"], stored["predicted"]) if c is not None}


def test_rounds_record_the_criteria_on_a_fixed_stop_set(tmp_path, database_url) -> None:
    store = Store(database_url)
    pid, service, gold = _project(store, tmp_path)
    r0 = _run(store, service, pid, gold)
    assert "stopping" not in r0.metrics and "stop_set" not in r0.report  # cold start: no model yet
    r1 = _run(store, service, pid, gold, label=False)
    ids = r1.report["stop_set"]["ids"]
    unlabelled = {i.item_id for i in store.get_items(pid, split="pool")} - {e.item_id for e in
                                                                           store.labelled_examples(pid)}
    assert len(ids) == len(set(ids)) == 15 and set(ids) <= unlabelled
    first = r1.metrics["stopping"]
    assert first["stop_set"] == 15 and first["predicted"] == 15 and first["kappa"] is None
    assert first["compared"] == 0 and set(first["holds"]) == set(CRITERIA) and not any(first["holds"].values())
    assert 0.0 <= first["uncertainty"] <= 1.0 and first["advice"].startswith("too early")
    assert "stopping" in r1.timings and r1.timings["stopping"] >= 0
    # label the batch and two stop-set items: they drop out of the stop set's predictions
    for s in store.get_scores(r1.id, selected_only=True):
        store.record_label(pid, s.item_id, f"o:{s.item_id}", payload=gold[s.item_id], source="oracle")
    for item in ids[:2]:
        store.record_label(pid, item, f"o:{item}", payload=gold[item], source="oracle")
    rounds = [r1] + [_run(store, service, pid, gold) for _ in range(3)]
    kappas = []
    for before, after in itertools.pairwise(rounds):
        assert after.report["stop_set"]["ids"] == ids  # the same stop set, every round
        labelled = None
        if after is rounds[-1]:  # the labels it trained on: all now but its own batch, labelled after it
            batch = {x.item_id for x in store.get_scores(after.id, selected_only=True)}
            labelled = {e.item_id for e in store.labelled_examples(pid)} - batch
        prev, cur = _codes(before), _codes(after)
        assert ids[0] not in cur and ids[1] not in cur
        common = [i for i in cur if i in prev]
        rec = after.metrics["stopping"]
        assert rec["predicted"] == len(cur) == sum(p is not None for p in after.report["stop_set"]["predicted"])
        assert rec["compared"] == len(common) > 0
        expected = cohen_kappa([tuple(prev[i]) for i in common], [tuple(cur[i]) for i in common])
        assert rec["kappa"] == pytest.approx(expected, abs=1e-6)
        assert rec["changed"] == pytest.approx(sum(prev[i] != cur[i] for i in common) / len(common), abs=1e-6)
        kappas.append(rec["kappa"])
        assert rec["kappa_window"] == pytest.approx(kappas[-3:])
        if labelled is not None:
            assert not set(cur) & labelled  # labelled stop-set items are never predicted
    assert rounds[-1].metrics["stopping"]["kappa_mean"] == pytest.approx(sum(kappas[-3:]) / 3, abs=1e-6)
    # the API-facing round list carries the criteria, not the stop set
    assert "stop_set" not in rounds[-1].to_dict() and "stopping" in rounds[-1].to_dict()["metrics"]


def test_ner_rounds_compare_word_tags(tmp_path) -> None:
    store = Store("sqlite://")
    schema = LabelSchema.build("ner", ["LOC", "PER"])
    p = store.create_project("ner", schema, loop=LoopConfig(strategy="least_confidence", batch_size=3, seed_size=4,
                                                           retrain_every=0, stop_set_size=10))
    names = [("Anna", "PER"), ("Paris", "LOC"), ("Bob", "PER"), ("Rome", "LOC")]
    data = []
    for i in range(30):
        name, tag = names[i % 4]
        text = f"{name} met someone {i} today"
        data.append(Example(ItemId(f"n{i}"), text, spans=(Span(0, len(name), tag),)))
    store.add_items(p.id, data, "pool")
    gold = {e.item_id: payload_from_example(e) for e in data}
    service = RoundService(store, FakeModel, tmp_path / "a")
    rounds = [_run(store, service, p.id, gold) for _ in range(4)][1:]
    for before, after in itertools.pairwise(rounds):
        prev, cur = _codes(before), _codes(after)
        assert all(len(c) == 5 for c in cur.values())  # one tag per word
        common = [i for i in cur if i in prev]
        flat_a = [t for i in common for t in prev[i]]
        flat_b = [t for i in common for t in cur[i]]
        assert after.metrics["stopping"]["kappa"] == pytest.approx(cohen_kappa(flat_a, flat_b), abs=1e-6)


def test_stop_set_size_zero_records_nothing(tmp_path) -> None:
    store = Store("sqlite://")
    pid, service, gold = _project(store, tmp_path, stop_set_size=0)
    _run(store, service, pid, gold)
    r1 = _run(store, service, pid, gold)
    assert "stopping" not in r1.metrics and "stop_set" not in r1.report and "stopping" not in r1.timings


def test_defaults_measure_and_never_pause() -> None:
    assert LoopConfig().stop_set_size == 1000 and LoopConfig().pause_when_stable is False


@pytest.mark.parametrize("bad", [{"stop_set_size": -1}, {"stop_set_size": 100_001}, {"stop_set_size": 1.5},
                                 {"pause_when_stable": 1}, {"pause_when_stable": "yes"}])
def test_stopping_settings_are_typed_and_bounded(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        LoopConfig(**bad)  # type: ignore[arg-type]


def _mark_stable(store: Store, round_id: int, stable: bool) -> None:
    rnd = store.get_round(round_id)
    holds = dict.fromkeys(CRITERIA, False) | {"stabilizing_predictions": stable}
    store.update_round(round_id, metrics={**rnd.metrics, "stopping": {"kappa": 1.0, "holds": holds}})


@pytest.mark.parametrize("pause", [True, False])
def test_pause_when_stable_holds_back_automatic_rounds_only(tmp_path, database_url, pause: bool) -> None:
    store = Store(database_url)
    pid, service, gold = _project(store, tmp_path, retrain_every=4, pause_when_stable=pause)
    _run(store, service, pid, gold)
    r1 = _run(store, service, pid, gold)  # labels its batch of 4: enough for an automatic round
    assert service.should_start_round(pid)  # not stable yet
    _mark_stable(store, r1.id, True)
    assert service.should_start_round(pid) is (not pause)
    # a round asked for by hand still runs, and its own criteria decide from then on
    manual = service.run_round(service.create_round(pid, trigger="api").id).round
    assert manual.status == "succeeded"
    for s in store.get_scores(manual.id, selected_only=True):
        store.record_label(pid, s.item_id, f"o:{s.item_id}", payload=gold[s.item_id], source="oracle")
    _mark_stable(store, manual.id, False)
    assert service.should_start_round(pid)


def _write_trec(path: Path, n: int, offset: int = 0) -> Path:
    words = {"NUM": "how many", "LOC": "where is", "HUM": "who was"}
    path.write_text("".join(f"{list(words)[i % 3]}:other {words[list(words)[i % 3]]} thing {i + offset} ?\n"
                            for i in range(n)))
    return path


def test_simulation_points_and_summary_say_where_each_criterion_stops(tmp_path) -> None:
    train = _write_trec(tmp_path / "q.train", 80)
    test = _write_trec(tmp_path / "q.test", 15, offset=1000)
    spec = SimulationSpec(train=train, test=test, task=TaskKind.CLASSIFICATION, strategies=("random", "margin"),
                          seed_size=6, batch_size=6, rounds=5, repeats=2, stop_set_size=20, out=tmp_path / "o")
    result = run_simulation(spec, model_factory=FakeModel, progress=False)
    first = [p for p in result.points if p["round"] == 1]
    assert all(p["kappa"] is None and p["uncertainty"] is not None for p in first)
    later = [p for p in result.points if p["round"] > 1]
    assert all(p["kappa"] is not None and p["changed"] is not None for p in later)
    for p in result.points:
        assert set(filter(None, p["stops"].split("|"))) <= set(CRITERIA)
    for strategy in ("random", "margin"):
        stopping = result.summary[strategy]["stopping"]
        assert set(stopping) == set(CRITERIA)
        for name, c in stopping.items():
            assert c["repeats"] == 2 and 0 <= c["fired"] <= 2
            for r in c["per_repeat"]:
                rows = [p for p in result.points if p["strategy"] == strategy and p["repeat"] == r["repeat"]]
                hit = next((p for p in sorted(rows, key=lambda p: p["round"]) if name in p["stops"].split("|")),
                           None)
                assert r["labels"] == (hit["labels"] if hit else None)
                assert r["final_labels"] == 30
    from annotator_bridge.commands.simulate import stopping_table

    table = stopping_table(result.summary)
    assert "stabilizing_predictions" in table and "labels at stop" in table and "margin" in table
    off = run_simulation(SimulationSpec(train=train, test=test, task=TaskKind.CLASSIFICATION, strategies=("random",),
                                        seed_size=6, batch_size=6, rounds=2, repeats=1, stop_set_size=0),
                         model_factory=FakeModel, progress=False)
    assert all(p["kappa"] is None and p["stops"] == "" for p in off.points)


class _CountingModel(FakeModel):
    """FakeModel that counts the texts of predict calls without embeddings (the stopping phase's own calls)."""

    plain: ClassVar[list[int]] = []

    def predict(self, texts, *, embeddings: bool = True):  # type: ignore[no-untyped-def]
        if not embeddings:
            _CountingModel.plain.append(len(texts))
        return super().predict(texts, embeddings=embeddings)


@pytest.mark.parametrize("stored", [20_000, 5])
def test_the_stop_set_reuses_the_rows_pool_scoring_stored(tmp_path, stored: int) -> None:
    store = Store("sqlite://")
    schema = LabelSchema.build("classification", ["pos", "neg"])
    p = store.create_project("p", schema, loop=LoopConfig(strategy="least_confidence", batch_size=4, seed_size=6,
                                                          retrain_every=0, stop_set_size=15,
                                                          max_scores_stored=stored))
    data = _cls_examples(60)
    store.add_items(p.id, data, "pool")
    gold = {e.item_id: payload_from_example(e) for e in data}
    service = RoundService(store, _CountingModel, tmp_path / "a")
    _run(store, service, p.id, gold)
    _CountingModel.plain = []
    rec = _run(store, service, p.id, gold).metrics["stopping"]
    assert rec["predicted"] == 15
    if stored >= 60:
        assert rec["reused"] == 15 and _CountingModel.plain == []  # no extra model call
    else:
        assert rec["reused"] < 15 and sum(_CountingModel.plain) == 15 - rec["reused"]


def test_stored_and_fresh_predictions_give_the_same_codes_and_confidence() -> None:
    from al_loop.rounds.scoring import item_confidence, prediction_payload
    from al_loop.rounds.stopping import prediction_code

    schema = LabelSchema.build("ner", ["LOC", "PER"])
    model = FakeModel(schema)
    model.fit([Example(ItemId("a"), "Anna saw Rome", spans=(Span(0, 4, "PER"), Span(9, 13, "LOC")))])
    texts = ["Rome and Anna", "Anna Anna Rome Rome", "nothing here", ""]
    out = model.predict(texts, embeddings=False)
    for j, text in enumerate(texts):
        conf = item_confidence(out, j, TaskKind.NER, False)
        payload = prediction_payload(TaskKind.NER, out.predicted[j], conf)
        fresh = prediction_code(TaskKind.NER, out.predicted[j], text, schema.labels, schema.tags)
        assert prediction_code(TaskKind.NER, payload["spans"], text, schema.labels, schema.tags) == fresh
        assert payload["confidence"] == conf and len(fresh) == len(text.split())
