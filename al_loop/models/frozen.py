"""Frozen lower transformer layers, with their outputs cached per window.

With ``TrainingConfig.freeze_layers`` = k > 0, a fine-tuned model with al-loop's own
head (:mod:`al_loop.models.pooled`) trains only the top layers: the input
embeddings and the lower k layers never change and always run in eval mode (no
dropout). Their output for a window therefore depends only on the window's token
ids, the frozen weights and the autocast precision, and is cached in the process
(:class:`LowerStateCache`): fitting and pool scoring then run only the top layers
for windows seen before (the LP-FT probe's pass over the labelled texts fills the
cache for training; a round's pool scoring fills it for the next round).

Cache key: a blake2b fingerprint of the frozen tensors (embeddings and the lower k
layers, so another base model, another k or changed weights never hit), the
autocast dtype, ``max_length`` and, per window, its token ids. States are kept as
float32 numpy arrays (converted back to the dtype they were computed in, so cached
and recomputed paths give the same numbers). The cache is bounded in bytes
(``TrainingConfig.frozen_cache_mb``): when full it stops growing and further windows
are recomputed each time (a pool larger than the budget never thrashes it); at most
:data:`MAX_FINGERPRINTS` models are kept, the oldest dropped first.

Supported encoders: BERT-like modules with ``embeddings`` and ``encoder.layer`` (a
``ModuleList``), such as MiniLM; for others :func:`split_encoder` returns None and
the model trains every layer (logged).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["MAX_FINGERPRINTS", "FrozenBottom", "LowerStateCache", "clear_lower_cache", "lower_cache", "split_encoder"]

MAX_FINGERPRINTS = 4  # e.g. two base models, each with fp32 (training) and bf16 (scoring) weights


def split_encoder(body: Any) -> tuple[Any, Any] | None:
    """(embeddings module, list of transformer layers) of a BERT-like encoder, or None when it has another shape."""
    embeddings = getattr(body, "embeddings", None)
    layers = getattr(getattr(body, "encoder", None), "layer", None)
    if embeddings is None or not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return None
    if getattr(body.config, "is_decoder", False):
        return None
    return embeddings, layers


def _fingerprint(modules: list[Any]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            arr = tensor.detach().to("cpu").contiguous()
            digest.update(str(arr.dtype).encode())
            digest.update(arr.view(torch.uint8).numpy().tobytes() if arr.numel() else b"")
    return digest.hexdigest()


class LowerStateCache:
    """Per-window lower-layer states of several frozen bottoms, bounded in bytes (thread-safe)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._spaces: OrderedDict[str, dict[bytes, np.ndarray]] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self._dtypes: dict[str, torch.dtype] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(self._bytes.values())

    def get(self, space: str, keys: list[bytes]) -> list[np.ndarray | None]:
        with self._lock:
            entries = self._spaces.get(space)
            if entries is None:
                self.misses += len(keys)
                return [None] * len(keys)
            self._spaces.move_to_end(space)
            found = [entries.get(k) for k in keys]
            hit = sum(f is not None for f in found)
            self.hits += hit
            self.misses += len(keys) - hit
            return found

    def dtype_of(self, space: str) -> torch.dtype:
        """The torch dtype the states of ``space`` were computed in (float32 when unknown)."""
        return self._dtypes.get(space, torch.float32)

    def put(self, space: str, key: bytes, states: np.ndarray, dtype: torch.dtype = torch.float32) -> bool:
        """Store ``states`` (computed in ``dtype``) unless the budget is spent; whether it was stored."""
        with self._lock:
            if space not in self._spaces:
                while len(self._spaces) >= MAX_FINGERPRINTS:
                    old, _ = self._spaces.popitem(last=False)
                    self._bytes.pop(old, None)
                    self._dtypes.pop(old, None)
                self._spaces[space] = {}
                self._dtypes[space] = dtype
                self._bytes[space] = 0
            entries = self._spaces[space]
            if key in entries:
                return True
            if self.nbytes + states.nbytes > self.max_bytes:
                return False
            entries[key] = states
            self._bytes[space] += states.nbytes
            return True

    def clear(self) -> None:
        with self._lock:
            self._spaces.clear()
            self._bytes.clear()
            self._dtypes.clear()
            self.hits = self.misses = 0


_CACHE = LowerStateCache(0)


def lower_cache(max_mb: int | None = None) -> LowerStateCache:
    """The process-wide cache; ``max_mb`` (when given) sets its budget (the largest asked for so far wins)."""
    if max_mb is not None:
        _CACHE.max_bytes = max(_CACHE.max_bytes, int(max_mb) * 2**20)
    return _CACHE


def clear_lower_cache() -> None:
    """Drop every cached state (tests; a worker never needs it)."""
    _CACHE.clear()


class FrozenBottom:
    """The frozen embeddings and lower ``k`` layers of ``body``; :meth:`states` gives their output for a batch.

    ``space``: the cache namespace (fingerprint, k, ``extra`` such as max_length); ``cache`` None: never cached.
    """

    def __init__(self, body: Any, k: int, *, cache: LowerStateCache | None, extra: str = "") -> None:
        parts = split_encoder(body)
        if parts is None:
            raise ValueError("the encoder has no embeddings + encoder.layer structure to freeze")
        self.embeddings, layers = parts
        self.k = max(0, min(int(k), len(layers)))
        self.lower = list(layers[: self.k])
        self.upper = list(layers[self.k :])
        self.config = body.config
        self.cache = cache
        for module in [self.embeddings, *self.lower]:
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
        self._base_space = f"{_fingerprint([self.embeddings, *self.lower])}/k={self.k}/{extra}"

    def eval(self) -> None:
        for module in [self.embeddings, *self.lower]:
            module.eval()

    def mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)

    def _compute(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(input_ids=input_ids)
        mask = self.mask(hidden, attention_mask)
        for layer in self.lower:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, width, d) output of the frozen part, without gradient; rows from the cache where it has them.

        Only right-padded batches (each mask row ones then zeros) use the cache; others are recomputed.
        """
        with torch.no_grad():
            lengths = [int(n) for n in attention_mask.sum(dim=1).tolist()]
            width = int(input_ids.shape[1])
            expected = torch.arange(width, device=attention_mask.device)[None, :] < attention_mask.sum(dim=1)[:, None]
            if self.cache is None or self.cache.max_bytes <= 0 or not bool((attention_mask.bool() == expected).all()):
                return self._compute(input_ids, attention_mask)
            kind = input_ids.device.type
            dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
            space = f"{self._base_space}/{dtype}"
            ids_np = input_ids.cpu().numpy()
            keys = [ids_np[r, :n].tobytes() for r, n in enumerate(lengths)]
            found = self.cache.get(space, keys)
            missing = [r for r, f in enumerate(found) if f is None]
            if len(missing) == len(keys):
                computed = self._compute(input_ids, attention_mask)
                self._store(space, keys, lengths, missing, computed)
                return computed
            out_dtype = self.cache.dtype_of(space)
            hidden = torch.zeros((len(keys), width, int(self.config.hidden_size)), dtype=out_dtype)
            for r, f in enumerate(found):
                if f is not None:
                    hidden[r, : f.shape[0]] = torch.from_numpy(f)
            if missing:
                sub = torch.tensor(missing, device=input_ids.device)
                computed = self._compute(input_ids[sub], attention_mask[sub])
                hidden[missing] = computed.to("cpu", hidden.dtype)
                self._store(space, keys, lengths, missing, computed)
            return hidden.to(input_ids.device)

    def _store(
        self, space: str, keys: list[bytes], lengths: list[int], rows: list[int], computed: torch.Tensor
    ) -> None:
        assert self.cache is not None
        arr = computed.detach().to("cpu")
        for i, r in enumerate(rows):
            if not self.cache.put(space, keys[r], arr[i, : lengths[r]].float().numpy().copy(), arr.dtype):
                break

    def forward_upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trainable top layers on the frozen part's output: the encoder's last hidden state."""
        mask = self.mask(hidden, attention_mask)
        for layer in self.upper:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

