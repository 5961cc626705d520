"""Predictions with a project's promoted model (the ML-backend ``/predict`` path).

Models are loaded lazily on first use and cached per model version, so processes that only
serve webhooks or management calls never import torch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from al_loop.errors import ConflictError
from al_loop.rounds.scoring import item_confidence, prediction_payload
from al_loop.rounds.service import ModelFactory, TrainedModel, default_model_factory
from al_loop.store.records import ModelVersion
from al_loop.store.repository import Store


@dataclass(frozen=True)
class PredictResult:
    model_version: str
    predictions: list[dict[str, Any]]  # one per text, in order: {"spans"|"labels", "confidence"}


class PredictService:
    def __init__(self, store: Store, model_factory: ModelFactory | None = None, max_cached: int = 2) -> None:
        self.store = store
        self._factory = model_factory
        self.max_cached = max_cached
        self._cache: OrderedDict[int, TrainedModel] = OrderedDict()
        self._lock = threading.Lock()

    def current_version(self, project_id: int) -> ModelVersion | None:
        return self.store.promoted_version(project_id)

    def _model(self, version: ModelVersion) -> TrainedModel:
        with self._lock:
            if version.id in self._cache:
                self._cache.move_to_end(version.id)
                return self._cache[version.id]
            if self._factory is None:
                self._factory = default_model_factory()
            project = self.store.get_project(version.project_id)
            model = self._factory.load(version.artifact_path, project.training)
            self._cache[version.id] = model
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
            return model

    def predict(self, project_id: int, texts: Sequence[str]) -> PredictResult:
        """Predict with the promoted version. ConflictError when the project has none yet."""
        version = self.current_version(project_id)
        if version is None or not version.artifact_path:
            raise ConflictError(f"project {project_id} has no promoted model version yet")
        if not texts:
            return PredictResult(version.name, [])
        model = self._model(version)
        output = model.predict(list(texts), embeddings=False)
        schema = model.schema
        preds = [
            prediction_payload(
                schema.task, output.predicted[i], item_confidence(output, i, schema.task, schema.multi_label)
            )
            for i in range(len(texts))
        ]
        return PredictResult(version.name, preds)
