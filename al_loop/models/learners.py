"""The model factory a round uses: a fine-tuned transformer or a head on frozen features.

``Learners.create(schema, base_model, config)`` builds the learner that
``config.learner`` names (``"head"`` -> :class:`HeadModel`, ``"finetune"`` or
``"auto"`` -> :class:`TextModel`; the round resolves ``"auto"`` by comparing both,
see :mod:`al_loop.rounds.learning`). ``Learners.load(artifact_dir)`` reads the
artifact's manifest (``"learner"``) and returns the matching class.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from al_loop.config import TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.models.artifacts import read_artifact
from al_loop.models.head import HeadModel
from al_loop.models.model import TextModel

log = logging.getLogger(__name__)

__all__ = ["Learners", "artifact_learner"]


def artifact_learner(artifact_dir: str | Path) -> str:
    """``"head"`` or ``"finetune"``: which learner wrote the artifact (older artifacts are fine-tuned models)."""
    _, manifest = read_artifact(artifact_dir)
    return str(manifest.get("learner") or "finetune")


class Learners:
    """A :class:`~al_loop.rounds.service.ModelFactory` over both learners."""

    @staticmethod
    def create(
        schema: LabelSchema,
        base_model: str = "default",
        config: TrainingConfig = TrainingConfig(),  # noqa: B008  (frozen, immutable default)
        init_from: str | Path | None = None,
    ) -> Any:
        if config.learner == "head":
            return HeadModel.create(schema, base_model, config)
        if init_from is not None and artifact_learner(init_from) != "finetune":
            log.info("warm start skipped: %s is a head model, fine-tuning starts from %s", init_from, base_model)
            init_from = None
        return TextModel.create(schema, base_model, config, init_from=init_from)

    @staticmethod
    def load(artifact_dir: str | Path, config: TrainingConfig | None = None) -> Any:
        if artifact_learner(artifact_dir) == "head":
            return HeadModel.load(artifact_dir, config)
        return TextModel.load(artifact_dir, config)
