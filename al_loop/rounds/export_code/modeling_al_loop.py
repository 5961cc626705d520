"""al-loop's classifier heads for transformers (shipped with an exported al-loop model version).

al-loop classifies from L2-normalised encoder states, which no stock transformers head does (BERT's sequence
head reads the [CLS] state through a tanh pooler, its token head the raw states, and a norm cannot be folded into
linear weights), so an exported version carries this file and loads with ``trust_remote_code=True``::

    pipeline("text-classification", model=DIR, trust_remote_code=True)

- :class:`AlLoopMeanPooledClassifier`: ``logits = W · normalize(mean of the last hidden states over real tokens) + b``
  (al-loop's LP-FT classifier, and the head learner's logistic regression over the same features).
- :class:`AlLoopNormalisedTokenClassifier`: per token ``logits = W · normalize(last hidden state) + b`` (al-loop's
  LP-FT token head, and the NER head learner's regression; al-loop tags a word by its first subword).

The encoder is built from this folder's config (``AutoModel.from_config``: any architecture); its weights are
``body.*`` in ``model.safetensors``, the head's ``classifier.weight`` / ``classifier.bias``. Imports only torch and
transformers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput


class _AlLoopHead(PreTrainedModel):
    """An encoder (``body``) and one linear layer (``classifier``) over its L2-normalised states."""

    base_model_prefix = "body"
    _keys_to_ignore_on_load_unexpected = [r"position_ids$"]  # noqa: RUF012  (transformers reads a list)

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.body = AutoModel.from_config(config)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> Any:
        return self.body.get_input_embeddings()

    def set_input_embeddings(self, value: Any) -> None:
        self.body.set_input_embeddings(value)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {k: kwargs[k] for k in ("token_type_ids",) if kwargs.get(k) is not None}
        out = self.body(input_ids=input_ids, attention_mask=attention_mask,
                        output_hidden_states=bool(kwargs.get("output_hidden_states")), return_dict=True, **extra)
        return out.last_hidden_state, attention_mask, out

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        if labels is None:
            return None
        if getattr(self.config, "problem_type", None) == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return F.cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1), ignore_index=-100)


class AlLoopMeanPooledClassifier(_AlLoopHead):
    """``logits = W · normalize(mean of the last hidden states over real tokens) + b``."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        hidden, attention_mask, out = self._encode(input_ids, attention_mask, kwargs)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(F.normalize(pooled.float(), dim=-1).to(self.classifier.weight.dtype))
        return SequenceClassifierOutput(loss=self._loss(logits, labels), logits=logits,
                                        hidden_states=out.hidden_states)


class AlLoopNormalisedTokenClassifier(_AlLoopHead):
    """Per token ``logits = W · normalize(last hidden state) + b``."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> TokenClassifierOutput:
        hidden, _, out = self._encode(input_ids, attention_mask, kwargs)
        logits = self.classifier(F.normalize(hidden.float(), dim=-1).to(self.classifier.weight.dtype))
        return TokenClassifierOutput(loss=self._loss(logits, labels), logits=logits,
                                     hidden_states=out.hidden_states)
