"""Pool-adaptive pretraining: masked-LM training of a base encoder on a project's unlabelled texts.

Task-adaptive pretraining (Gururangan et al. 2020): before any label exists, continue the encoder's masked-LM
training on the pool itself, so rounds start from an encoder shifted to the domain. :func:`adapt_encoder` trains
once within an :class:`AdaptBudget` (steps, wall-clock seconds, texts) and writes the **encoder only** (an
``AutoModel``-loadable folder with the tokenizer, which any round accepts as ``base_model``) plus
``adapt_manifest.json`` to ``cache_root/<adapted_key>/``, atomically; a complete folder there is returned as is
(``cached=True``) without training.

Sentence-embedding checkpoints such as the default MiniLM are saved as ``BertModel`` without an MLM head: loading
them with ``AutoModelForMaskedLM`` initialises the head's transform (dense + LayerNorm) and its output bias at random
(the decoder is tied to the word embeddings, so it exists). The first :data:`HEAD_WARMUP_FRACTION` of the steps
therefore train only that head (the encoder and the tied embeddings frozen), so the gradients of a random head do
not run through the encoder; the load report's newly initialised keys are logged and stored in the manifest. The
checkpoint's pooler (which ``*ForMaskedLM`` drops) is kept from the base model, so ``pooling: cls`` still finds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from al_loop.errors import ConfigError, EmptyInputError, ModelLoadError
from al_loop.folders import replace_folder
from al_loop.models.loading import pick_device, pick_precision, precision_name, quiet_transformers, resolve_model_path
from al_loop.models.mlm import (
    HEAD_WARMUP_FRACTION,
    head_parameters,
    head_warmup_steps,
    heldout_loss,
    load_mlm,
    lr_schedule,
    mask_tokens,
    mlm_loss,
    pad_batch,
    split_heldout,
)

log = logging.getLogger(__name__)

__all__ = [
    "ADAPT_MANIFEST",
    "HEAD_WARMUP_FRACTION",
    "AdaptBudget",
    "AdaptResult",
    "adapt_encoder",
    "adapted_key",
    "fingerprint_texts",
    "read_adapt_manifest",
]

ADAPT_MANIFEST = "adapt_manifest.json"
ADAPT_FORMAT = "al-loop-adapted-encoder"
_WEIGHT_DECAY = 0.01
_KEY_VERSION = 1  # bump when the training recipe changes, so an old cache entry is not taken for a new one

ProgressFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class AdaptBudget:
    """Bounds of one adaptation. ``max_seconds`` is checked after each step (the step crossing it is the last)."""

    max_steps: int = 300  # optimizer steps
    max_seconds: float = 600.0  # wall-clock cap; stops after the step that crosses it
    max_texts: int = 20000  # texts sampled (seeded) from the pool when it is larger
    batch_size: int = 16
    max_length: int = 128  # tokens per text (longer texts are truncated)
    learning_rate: float = 5e-5
    mlm_probability: float = 0.15
    seed: int = 13

    def __post_init__(self) -> None:
        checks = [
            (self.max_steps, 1, 1_000_000, "max_steps"),
            (self.max_seconds, 1.0, 7 * 24 * 3600.0, "max_seconds"),
            (self.max_texts, 1, 100_000_000, "max_texts"),
            (self.batch_size, 1, 4096, "batch_size"),
            (self.max_length, 8, 8192, "max_length"),
            (self.learning_rate, 1e-8, 1.0, "learning_rate"),
            (self.mlm_probability, 0.01, 0.9, "mlm_probability"),
            (self.seed, 0, 2**32 - 1, "seed"),
        ]
        for value, low, high, name in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise ConfigError(f"adapt {name} must be a number, got {value!r}")
            if not low <= value <= high:
                raise ConfigError(f"adapt {name} must be between {low} and {high}, got {value!r}")
        for name in ("max_steps", "max_texts", "batch_size", "max_length", "seed"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"adapt {name} must be an integer, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AdaptResult:
    """The adapted encoder's folder and what it cost: optimizer ``steps`` (head warm-up included), wall ``seconds``
    of training (0 on a cache hit: the manifest's figures are those of the run that wrote it), ``texts`` trained on,
    the mean MLM loss of the first and the last few steps."""

    folder: Path
    steps: int
    seconds: float
    texts: int
    loss_first: float
    loss_last: float
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["folder"] = str(self.folder)
        return data


def fingerprint_texts(texts: Iterable[str]) -> str:
    """sha256 (hex) over the texts in order (each UTF-8 encoded and length-prefixed, so boundaries count)."""
    digest = hashlib.sha256()
    for text in texts:
        data = str(text).encode("utf-8", errors="surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def adapted_key(base_model_path: str, texts_fingerprint: str, budget: AdaptBudget) -> str:
    """The cache folder name of one adaptation: ``mlm-`` + 24 hex digits of a hash over the base model (the string
    as given), the texts' fingerprint, every budget field and the recipe version."""
    payload = json.dumps(
        {"v": _KEY_VERSION, "base": str(base_model_path), "texts": texts_fingerprint, "budget": budget.to_dict()},
        sort_keys=True,
    )
    return "mlm-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def read_adapt_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The ``adapt_manifest.json`` of a complete adapted-encoder folder, or None (absent, unreadable, incomplete)."""
    path = Path(folder)
    try:
        with (path / ADAPT_MANIFEST).open("rb") as fh:
            data = json.loads(fh.read(1_000_000))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != ADAPT_FORMAT:
        return None
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        return None
    return data


def _result_from_manifest(folder: Path, data: dict[str, Any]) -> AdaptResult:
    def num(name: str) -> float:
        value = data.get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")

    return AdaptResult(
        folder=folder,
        steps=int(num("steps")) if math.isfinite(num("steps")) else 0,
        seconds=num("seconds"),
        texts=int(num("texts")) if math.isfinite(num("texts")) else 0,
        loss_first=num("loss_first"),
        loss_last=num("loss_last"),
        cached=True,
    )


def _sample(texts: Sequence[str], budget: AdaptBudget) -> list[str]:
    kept = [t for t in texts if isinstance(t, str) and t.strip()]
    if len(kept) > budget.max_texts:
        rng = np.random.default_rng(budget.seed)
        picked = np.sort(rng.choice(len(kept), size=budget.max_texts, replace=False))
        kept = [kept[int(i)] for i in picked]
    return kept


def adapt_encoder(
    base_model_path: str,
    texts: Sequence[str],
    cache_root: str | Path,
    budget: AdaptBudget = AdaptBudget(),
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    precision: str = "auto",
    head_warmup: bool = True,
) -> AdaptResult:
    """Masked-LM training of ``base_model_path``'s encoder on ``texts`` within ``budget``, cached.

    ``base_model_path``: anything :func:`resolve_model_path` accepts (``"default"``, a local folder, a cached Hugging
    Face name). ``texts``: the unlabelled pool, in a stable order (the cache key hashes them in order); blank ones
    are skipped and at most ``budget.max_texts`` are drawn (seeded). ``progress(step, total_steps, loss)`` is called
    after each optimizer step (``total_steps`` = ``budget.max_steps``). ``precision``: ``auto`` (bf16 autocast where
    the device has it), ``bf16`` or ``fp32``. ``head_warmup``: train only a newly initialised MLM head for the
    first steps (:func:`head_warmup_steps`). The result folder is ``cache_root/<adapted_key>/``.
    """
    from transformers import AutoModel

    texts = list(texts)
    fingerprint = fingerprint_texts(texts)
    key = adapted_key(base_model_path, fingerprint, budget)
    target = Path(cache_root) / key
    existing = read_adapt_manifest(target)
    if existing is not None:
        log.info("adapted encoder %s found in the cache (%s steps)", target, existing.get("steps"))
        return _result_from_manifest(target, existing)

    sample = _sample(texts, budget)
    if not sample:
        raise EmptyInputError("pool-adaptive pretraining needs at least one non-blank text")
    folder = resolve_model_path(base_model_path)
    dev = pick_device(device)
    dtype = pick_precision(precision, dev)
    torch.manual_seed(budget.seed)
    model, tokenizer, missing = load_mlm(folder)
    if missing:
        log.info("masked-LM head of %s: newly initialised %s", folder, ", ".join(missing))
    encoded: list[list[int]] = tokenizer(
        sample, truncation=True, max_length=budget.max_length, add_special_tokens=True
    )["input_ids"]
    special_ids = set(tokenizer.all_special_ids)
    encoded = [ids for ids in encoded if any(t not in special_ids for t in ids)]
    if not encoded:
        raise EmptyInputError("pool-adaptive pretraining: no text has a token besides special tokens")
    held, encoded = split_heldout(encoded, budget.seed)

    model.to(dev)
    model.train()
    warm = head_warmup_steps(budget.max_steps, missing) if head_warmup else 0
    head_params = head_parameters(model)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n]
    decay_ids = {id(p) for p in decay}
    no_decay = [p for p in model.parameters() if id(p) not in decay_ids]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": _WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=budget.learning_rate,
    )
    head_optimizer = torch.optim.AdamW(head_params, lr=budget.learning_rate * 10) if warm and head_params else None
    factor = lr_schedule(budget.max_steps, warm)
    gen = torch.Generator().manual_seed(budget.seed)
    order: list[int] = []
    losses: list[float] = []
    start = time.monotonic()
    step = 0
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    vocab = int(model.config.vocab_size)
    while step < budget.max_steps:
        if len(order) < budget.batch_size:
            order.extend(torch.randperm(len(encoded), generator=gen).tolist())
        take, order = order[: budget.batch_size], order[budget.batch_size :]
        ids, attention, special = pad_batch([encoded[i] for i in take], pad_id, special_ids)
        inputs, labels = mask_tokens(
            ids, special, mask_id=int(tokenizer.mask_token_id), vocab_size=vocab,
            probability=budget.mlm_probability, gen=gen,
        )
        head_only = step < warm and head_optimizer is not None
        opt = head_optimizer if head_only and head_optimizer is not None else optimizer
        if head_only:
            for group in opt.param_groups:
                group["lr"] = budget.learning_rate * 10
        else:
            for group in opt.param_groups:
                group["lr"] = budget.learning_rate * factor(step - warm)
        body_grad = not head_only
        for p in model.base_model.parameters():
            p.requires_grad_(body_grad)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = mlm_loss(model, inputs.to(dev), attention.to(dev), labels.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
        opt.step()
        step += 1
        value = float(loss.detach().float().cpu())
        losses.append(value)
        if progress is not None:
            progress(step, budget.max_steps, value)
        if time.monotonic() - start >= budget.max_seconds:
            log.info("pool-adaptive pretraining stopped by its time budget after %d steps", step)
            break
    seconds = time.monotonic() - start
    heldout = heldout_loss(model, held, pad_id, special_ids, int(tokenizer.mask_token_id), vocab, budget, dev, dtype)
    for p in model.parameters():
        p.requires_grad_(True)
    window = max(1, min(10, len(losses) // 4 or 1))
    loss_first = float(np.mean(losses[:window]))
    loss_last = float(np.mean(losses[-window:]))

    trained = {k: v.detach().cpu() for k, v in model.base_model.state_dict().items()}
    del model, optimizer, head_optimizer
    with quiet_transformers():
        encoder = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    result = encoder.load_state_dict(trained, strict=False)
    unexpected = list(result.unexpected_keys)
    not_trained = [k for k in result.missing_keys if not k.startswith("pooler.")]
    if unexpected or not_trained:
        raise ModelLoadError(
            f"the adapted encoder of {folder} does not match its base model: missing {not_trained[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    manifest = {
        "format": ADAPT_FORMAT,
        "key": key,
        "base_model": str(base_model_path),
        "base_model_folder": folder,
        "texts_fingerprint": fingerprint,
        "budget": budget.to_dict(),
        "texts": len(encoded),
        "steps": step,
        "head_warmup_steps": min(warm, step),
        "seconds": round(seconds, 3),
        "loss_first": loss_first,
        "loss_last": loss_last,
        "heldout_loss": heldout,  # mean MLM loss on held-out pool texts after training (None when too few texts)
        "heldout_texts": len(held),
        "newly_initialised": missing,
        "device": str(dev),
        "precision": precision_name(dtype),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }

    def fill(tmp: Path) -> None:
        encoder.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with (tmp / ADAPT_MANIFEST).open("w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)

    replace_folder(target, fill)
    log.info(
        "adapted encoder written to %s: %d steps in %.1f s on %d texts, MLM loss %.3f -> %.3f",
        target, step, seconds, len(encoded), loss_first, loss_last,
    )
    return AdaptResult(
        folder=target, steps=step, seconds=seconds, texts=len(encoded), loss_first=loss_first, loss_last=loss_last,
        cached=False,
    )
