"""The fine-tuned text classifier: mean-pooled encoder states, L2-normalised, then one linear layer.

Why not ``AutoModelForSequenceClassification``: BERT-style classification heads
read the ``[CLS]`` state through a ``pooler`` that sentence-embedding checkpoints
such as all-MiniLM-L6-v2 never trained (they were trained on mean-pooled states).
Fine-tuning that path from a few dozen labels has to learn the pooler first.
Measured 2026-12-01 on TREC *training* questions only (random labelled sets of 50,
dev = 500 other training questions, 3 seeds, 100 steps): 47.1% dev accuracy with
the ``[CLS]``/pooler head, 70.8% with the mean-pooled head from a random start and
79.0% when the mean-pooled head starts from the logistic regression of the frozen
features (LP-FT, see :mod:`al_loop.models.linear`); 25 labels: 56.0% (head learner
on frozen features: about 43%), 100 labels: 84.5%.

The module mimics what :class:`~al_loop.models.model.TextModel` and the trainer
use of a Hugging Face model: ``config``, ``base_model_prefix`` (the encoder's
parameters are ``body.*``, everything else is head), ``get_input_embeddings``,
``forward(...).logits`` / ``.hidden_states``, ``save_pretrained``. Artifact: the
encoder's own ``save_pretrained`` files (safetensors; ``config.json`` carries the
schema's ``id2label``) plus :data:`POOLED_HEAD_FILE` (``weight`` (k, d), ``bias`` (k,)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from al_loop.models.frozen import FrozenBottom, lower_cache, split_encoder

__all__ = [
    "POOLED_HEAD_FILE",
    "MeanPooledClassifier",
    "NormalisedTokenClassifier",
    "PooledOutput",
    "has_pooled_head",
]

POOLED_HEAD_FILE = "pooled_head.safetensors"


def has_pooled_head(folder: str | Path) -> bool:
    """Whether ``folder`` holds a :class:`MeanPooledClassifier` artifact (its head file is there)."""
    return (Path(folder) / POOLED_HEAD_FILE).is_file()


@dataclass
class PooledOutput:
    """``logits`` (batch, k); ``hidden_states``: ``(last hidden state,)`` when asked for, else None."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


class _LinearHeadOverEncoder(torch.nn.Module):
    """An encoder (``body``) and one linear layer (``classifier``) over L2-normalised states."""

    base_model_prefix = "body"

    def __init__(self, body: Any, num_labels: int) -> None:
        super().__init__()
        self.body = body
        self.classifier = torch.nn.Linear(int(body.config.hidden_size), num_labels)
        self._bottom: FrozenBottom | None = None

    @property
    def config(self) -> Any:
        return self.body.config

    @property
    def frozen_layers(self) -> int:
        """Lower transformer layers frozen and cached (see :mod:`al_loop.models.frozen`); 0: the whole encoder runs."""
        return self._bottom.k if self._bottom is not None else 0

    def freeze_lower(self, k: int, cache_mb: int, extra: str = "") -> int:
        """Freeze the embeddings and the lower ``k`` layers (eval mode, no gradient) and cache their outputs in a
        budget of ``cache_mb`` MiB (0: never cached); returns the layers frozen (0 for an encoder of another shape,
        which then runs whole). ``k`` = 0 undoes nothing already frozen: it only stops using the frozen path."""
        if k <= 0 or split_encoder(self.body) is None:
            self._bottom = None
            return 0
        cache = lower_cache(cache_mb) if cache_mb > 0 else None
        self._bottom = FrozenBottom(self.body, k, cache=cache, extra=extra)
        return self._bottom.k

    def train(self, mode: bool = True) -> _LinearHeadOverEncoder:
        super().train(mode)
        if self._bottom is not None:
            self._bottom.eval()
        return self

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden state (batch, width, d): the whole encoder, or the frozen part's (cached)
        output through the top layers."""
        if self._bottom is None:
            return self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._bottom.forward_upper(self._bottom.states(input_ids, attention_mask), attention_mask)

    def get_input_embeddings(self) -> Any:
        return self.body.get_input_embeddings()

    def set_head(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Replace the linear layer's weights (e.g. by a logistic regression of the frozen features)."""
        with torch.no_grad():
            self.classifier.weight.copy_(torch.as_tensor(weight, dtype=self.classifier.weight.dtype))
            self.classifier.bias.copy_(torch.as_tensor(bias, dtype=self.classifier.bias.dtype))

    def save_pretrained(self, folder: str) -> None:
        """Encoder files (safetensors) plus :data:`POOLED_HEAD_FILE`."""
        from safetensors.torch import save_file

        self.body.save_pretrained(folder)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.classifier.state_dict().items()}
        save_file(state, str(Path(folder) / POOLED_HEAD_FILE))

    def load_head(self, folder: str | Path) -> None:
        """Load :data:`POOLED_HEAD_FILE` from ``folder``; ValueError when its shape does not fit."""
        from safetensors.torch import load_file

        state = load_file(str(Path(folder) / POOLED_HEAD_FILE))
        want = tuple(self.classifier.weight.shape)
        got = tuple(state["weight"].shape) if "weight" in state else None
        if got != want or "bias" not in state:
            raise ValueError(f"{POOLED_HEAD_FILE} holds a head of shape {got}, the model needs {want}")
        self.classifier.load_state_dict(state)


class MeanPooledClassifier(_LinearHeadOverEncoder):
    """``logits = W · normalise(mean of the last hidden states over real tokens) + b``."""

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False
    ) -> PooledOutput:
        hidden = self.encode(input_ids, attention_mask)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(F.normalize(pooled.float(), dim=-1))
        return PooledOutput(logits=logits, hidden_states=(hidden,) if output_hidden_states else None)


class NormalisedTokenClassifier(_LinearHeadOverEncoder):
    """Per token ``logits = W · normalise(last hidden state) + b`` (the NER head learner's features)."""

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False
    ) -> PooledOutput:
        hidden = self.encode(input_ids, attention_mask)
        logits = self.classifier(F.normalize(hidden.float(), dim=-1))
        return PooledOutput(logits=logits, hidden_states=(hidden,) if output_hidden_states else None)
