"""Transformer models over a label schema: loading, inference, fine-tuning, artifacts.

Importing this package imports torch and transformers (no model is loaded).
"""

from __future__ import annotations

from al_loop.models.artifacts import read_artifact, write_artifact
from al_loop.models.loading import cpu_supports_bf16, pick_device, pick_precision, resolve_model_path
from al_loop.models.model import MULTI_LABEL_THRESHOLD, ModelOutput, TextModel, TrainReport

__all__ = [
    "MULTI_LABEL_THRESHOLD",
    "ModelOutput",
    "TextModel",
    "TrainReport",
    "cpu_supports_bf16",
    "pick_device",
    "pick_precision",
    "read_artifact",
    "resolve_model_path",
    "write_artifact",
]
