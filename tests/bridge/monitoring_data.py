"""Real rounds for the monitoring tests: the real RoundService with a fast word-vote model.

``MetricModel`` is the FakeModel of ``tests/core/fakes.py`` evaluated with the real metric
functions (``al_loop.training.metrics``), so rounds store per-label scores and a confusion
matrix (classification) or per-type errors (NER) exactly like the transformer model does.
``build_live_project`` runs a few rounds the way the live loop does (rounds labelled by named
annotators at known times); ``attach_simulation`` runs a short real simulation
(``al_loop.simulate.run_simulation``) and stores its points for the dashboard overlay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from al_loop.config import LoopConfig, TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.rounds import RoundService
from al_loop.simulate import SimulationSpec, run_simulation
from al_loop.store import Store
from al_loop.store.records import Round, payload_from_example
from al_loop.training.metrics import classification_metrics, ner_metrics
from al_loop.types import Example, ItemId, Span, TaskKind
from tests.core.fakes import FakeModel

WORDS = ["good", "great", "fine", "nice", "bad", "awful", "poor", "sad"]
FILLER = ["movie", "plot", "actor", "scene", "music", "ending", "story", "cast", "script", "pace"]


class MetricModel(FakeModel):
    """FakeModel whose evaluation uses the real metric functions (per-label, confusion, errors)."""

    def evaluate(self, examples: Sequence[Example]) -> dict[str, Any]:
        out = self.predict([e.text for e in examples], embeddings=False)
        if self.schema.task is TaskKind.NER:
            return ner_metrics([e.text for e in examples], [tuple(e.spans or ()) for e in examples],
                               [tuple(p) for p in out.predicted])
        return classification_metrics([tuple(e.labels or ()) for e in examples], [tuple(p) for p in out.predicted],
                                      list(self.schema.labels), self.schema.multi_label)


def cls_examples(n: int, prefix: str = "i", offset: int = 0) -> list[Example]:
    """Synthetic sentiment items whose label follows from one word (learnable by the word-vote model)."""
    out = []
    for i in range(offset, offset + n):
        w = WORDS[(i * 7) % len(WORDS)]
        filler = " ".join(FILLER[(i + k) % len(FILLER)] for k in range(1 + i % 3))
        label = "pos" if WORDS.index(w) < 4 else "neg"
        out.append(Example(ItemId(f"{prefix}{i}"), f"the {filler} was {w} number {i}", labels=(label,)))
    return out


class SteppingClock:
    """A deterministic clock for the store: each call advances by ``step``."""

    def __init__(self, start: datetime, step: timedelta = timedelta(seconds=1)) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


@dataclass
class LiveProject:
    store: Store
    project_id: int
    service: RoundService
    gold: dict[str, dict[str, Any]]
    rounds: list[Round] = field(default_factory=list)
    # (annotator, updated_at) of every label recorded, in order
    labels: list[tuple[str, datetime]] = field(default_factory=list)


def build_live_project(
    store: Store,
    artifacts: Path,
    *,
    name: str = "reviews",
    pool: Sequence[Example] | None = None,
    test: Sequence[Example] | None = None,
    labels: Sequence[str] = ("neg", "pos"),
    task: str = "classification",
    rounds: int = 4,
    batch_size: int = 8,
    seed_size: int = 10,
    annotators: Sequence[str] = ("alice", "bob"),
    label_time: datetime | None = None,
    label_step: timedelta = timedelta(minutes=3),
    promote: str = "always",
) -> LiveProject:
    """A project with ``rounds`` finished rounds (round 0 = cold start), each batch labelled by ``annotators``.

    Labels after round k are stamped ``label_time + j * label_step`` (annotation time, as Label
    Studio reports it). The newest round's batch is left unlabelled (the batch "in Label Studio").
    """
    schema = LabelSchema.build(task, list(labels))
    loop = LoopConfig(strategy="least_confidence", batch_size=batch_size, seed_size=seed_size, retrain_every=0,
                      promote=promote)
    project = store.create_project(name, schema, loop=loop, training=TrainingConfig())
    pool = list(pool) if pool is not None else cls_examples(80)
    test = list(test) if test is not None else cls_examples(30, prefix="t", offset=1000)
    store.add_items(project.id, pool, "pool")
    store.add_items(project.id, test, "test")
    service = RoundService(store, MetricModel, artifacts)
    live = LiveProject(store, project.id, service, {e.item_id: payload_from_example(e) for e in pool})
    t = label_time or (store.clock() - timedelta(hours=3))
    n = 0
    for k in range(rounds):
        rnd = service.run_round(service.create_round(project.id, trigger="test").id).round
        if rnd.status != "succeeded":
            raise RuntimeError(f"round {rnd.index} failed: {rnd.error}")
        live.rounds.append(rnd)
        if k == rounds - 1:
            break
        for s in store.get_scores(rnd.id, selected_only=True):
            who = annotators[n % len(annotators)]
            when = t + n * label_step
            store.record_label(project.id, s.item_id, f"ls:{n + 1}", payload=live.gold[s.item_id],
                               source="labelstudio", annotator=who, updated_at=when)
            live.labels.append((who, when))
            n += 1
    return live


def write_jsonl(path: Path, examples: Sequence[Example]) -> Path:
    import json

    with path.open("w") as fh:
        for e in examples:
            rec: dict[str, Any] = {"id": e.item_id, "text": e.text}
            if e.labels is not None:
                rec["label"] = list(e.labels) if len(e.labels) != 1 else e.labels[0]
            if e.spans is not None:
                rec["spans"] = [s.to_dict() for s in e.spans]
            fh.write(json.dumps(rec) + "\n")
    return path


def attach_simulation(
    store: Store,
    project_id: int,
    train: Path,
    test: Path,
    *,
    task: TaskKind = TaskKind.CLASSIFICATION,
    strategies: tuple[str, ...] = ("random", "least_confidence"),
    seed_size: int = 10,
    batch_size: int = 8,
    rounds: int = 4,
    repeats: int = 2,
    max_pool: int = 0,
    max_test: int = 0,
    name: str = "simulation",
    fmt: str | None = None,
) -> dict[str, Any]:
    """Run a short real simulation (own in-memory store) and attach its points to ``project_id``."""
    spec = SimulationSpec(train=train, test=test, task=task, strategies=strategies, seed_size=seed_size,
                          batch_size=batch_size, rounds=rounds, repeats=repeats, max_pool=max_pool,
                          max_test=max_test, format=fmt, test_format=fmt)
    result = run_simulation(spec, model_factory=MetricModel, progress=False)
    sim_id = store.add_simulation(project_id, name, result.points)
    return {"id": sim_id, "points": result.points, "summary": result.summary}


def ner_examples(n: int, prefix: str = "n", offset: int = 0) -> list[Example]:
    diseases = ["cancer", "flu", "asthma", "diabetes"]
    out = []
    for i in range(offset, offset + n):
        d = diseases[i % len(diseases)]
        text = f"patients with {d} were seen in week {i}"
        start = len("patients with ")
        out.append(Example(ItemId(f"{prefix}{i}"), text, spans=(Span(start, start + len(d), "Disease"),)))
    return out
