"""A fast, deterministic stand-in for TextModel (unit tests of rounds and services only)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from al_loop.config import TrainingConfig
from al_loop.data.align import spans_to_word_tags, word_tags_to_spans, words_of
from al_loop.data.schema import LabelSchema
from al_loop.types import Example, TaskKind


@dataclass
class FakeOutput:
    embeddings: np.ndarray
    probs: np.ndarray | None
    token_probs: list[np.ndarray] | None
    words: list[list[tuple[int, int]]] | None
    predicted: list[Any]


@dataclass
class FakeReport:
    epochs: int
    steps: int
    n_train: int
    val_score: float | None = None


class FakeModel:
    """Word-vote model: each word votes for the labels it was seen with in training."""

    created: ClassVar[list[FakeModel]] = []

    def __init__(self, schema: LabelSchema, base_model: str = "default", config: TrainingConfig | None = None) -> None:
        self.schema = schema
        self.base_model = base_model
        self.config = config or TrainingConfig()
        self.votes: dict[str, Counter[str]] = {}
        self.fit_calls = 0
        self.init_from: str | Path | None = None
        self.warm_started = False
        FakeModel.created.append(self)

    @classmethod
    def create(
        cls,
        schema: LabelSchema,
        base_model: str = "default",
        config: TrainingConfig | None = None,
        init_from: str | Path | None = None,
    ) -> FakeModel:
        model = cls(schema, base_model, config)
        model.init_from = init_from
        model.warm_started = init_from is not None
        if init_from is not None:
            model.votes = {k: Counter(v) for k, v in json.loads((Path(init_from) / "votes.json").read_text()).items()}
        return model

    @classmethod
    def load(cls, artifact_dir: str | Path, config: TrainingConfig | None = None) -> FakeModel:
        d = Path(artifact_dir)
        schema = LabelSchema.from_dict(json.loads((d / "label_schema.json").read_text()))
        return cls.create(schema, "default", config, init_from=d)

    def save(self, artifact_dir: str | Path, extra_manifest: dict[str, Any] | None = None) -> Path:
        d = Path(artifact_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / "votes.json").write_text(json.dumps({k: dict(v) for k, v in self.votes.items()}))
        (d / "label_schema.json").write_text(json.dumps(self.schema.to_dict()))
        (d / "manifest.json").write_text(json.dumps(extra_manifest or {}))
        return d

    def fit(self, examples: Sequence[Example], *, progress: Callable[[float], None] | None = None) -> FakeReport:
        self.fit_calls += 1
        for ex in examples:
            if self.schema.task is TaskKind.NER:
                words = words_of(ex.text)
                for (s, e), tag in zip(words, spans_to_word_tags(words, ex.spans or ())):
                    self.votes.setdefault(ex.text[s:e].lower(), Counter())[tag] += 1
            else:
                for w in ex.text.lower().split():
                    for lb in ex.labels or ():
                        self.votes.setdefault(w, Counter())[lb] += 1
            if progress:
                progress(1.0)
        return FakeReport(epochs=1, steps=len(examples), n_train=len(examples))

    def _dist(self, word: str) -> np.ndarray:
        tags = self.schema.tags
        v = np.ones(len(tags))
        for tag, n in self.votes.get(word.lower(), Counter()).items():
            v[tags.index(tag)] += 3 * n
        return v / v.sum()

    def predict(self, texts: Sequence[str], *, embeddings: bool = True) -> FakeOutput:
        emb = np.array([[len(t), t.count(" "), sum(map(ord, t[:5])) % 97] for t in texts], dtype=np.float32)
        if self.schema.task is TaskKind.NER:
            token_probs, words_all, predicted = [], [], []
            for t in texts:
                words = words_of(t)
                tp = np.array([self._dist(t[s:e]) for s, e in words]).reshape(len(words), self.schema.num_outputs)
                tags = [self.schema.tags[i] for i in tp.argmax(axis=1)] if len(words) else []
                token_probs.append(tp.astype(np.float32))
                words_all.append(words)
                predicted.append(tuple(word_tags_to_spans(words, tags)))
            return FakeOutput(emb, None, token_probs, words_all, predicted)
        probs = []
        for t in texts:
            p = np.ones(len(self.schema.tags))
            for w in t.lower().split():
                p += self._dist(w) - 1 / len(self.schema.tags)
            probs.append(np.clip(p, 1e-6, None) / np.clip(p, 1e-6, None).sum())
        arr = np.array(probs, dtype=np.float32).reshape(len(texts), len(self.schema.tags))
        pred = [(self.schema.tags[int(i)],) for i in arr.argmax(axis=1)] if len(texts) else []
        return FakeOutput(emb, arr, None, None, pred)

    def evaluate(self, examples: Sequence[Example]) -> dict[str, Any]:
        out = self.predict([e.text for e in examples])
        if self.schema.task is TaskKind.NER:
            gold = [tuple(e.spans or ()) for e in examples]
            hits = sum(1 for g, p in zip(gold, out.predicted) if tuple(g) == tuple(p))
        else:
            hits = sum(1 for e, p in zip(examples, out.predicted) if tuple(e.labels or ()) == tuple(p))
        return {"score": hits / max(len(examples), 1), "per_label": {}}
