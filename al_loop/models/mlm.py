"""Masked-LM training pieces of pool-adaptive pretraining (:mod:`al_loop.models.adapt`): BERT masking, dynamic
padding, the loss on masked positions only, the head-only warm-up and the learning-rate schedule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from al_loop.errors import ModelLoadError
from al_loop.models.loading import quiet_transformers

__all__ = [
    "HEAD_WARMUP_FRACTION",
    "head_parameters",
    "head_warmup_steps",
    "heldout_loss",
    "load_mlm",
    "lr_schedule",
    "mask_tokens",
    "mlm_loss",
    "pad_batch",
    "split_heldout",
]

HEAD_WARMUP_FRACTION = 0.1  # of max_steps: only the (partly new) MLM head trains; at most 50 steps
_MAX_HEAD_WARMUP = 50
_WARMUP_FRACTION = 0.06  # linear learning-rate warm-up of the full phase, then linear decay to 0


def mask_tokens(
    input_ids: torch.Tensor,
    special: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    probability: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (``DataCollatorForLanguageModeling`` semantics), seeded by ``gen``: each non-special token is
    chosen with ``probability``; of those 80% become ``mask_id``, 10% a random token, 10% stay. Returns (inputs,
    labels) with labels -100 where nothing is predicted. At least one token per batch is chosen."""
    labels = input_ids.clone()
    probs = torch.full(input_ids.shape, probability)
    probs.masked_fill_(special, 0.0)
    chosen = torch.bernoulli(probs, generator=gen).bool()
    if not bool(chosen.any()):
        candidates = (~special).nonzero()
        if len(candidates):
            pick = candidates[int(torch.randint(len(candidates), (1,), generator=gen))]
            chosen[pick[0], pick[1]] = True
    labels[~chosen] = -100
    inputs = input_ids.clone()
    replace = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=gen).bool() & chosen
    inputs[replace] = mask_id
    rand = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=gen).bool() & chosen & ~replace
    inputs[rand] = torch.randint(vocab_size, input_ids.shape, generator=gen)[rand]
    return inputs, labels


def pad_batch(
    encoded: Sequence[list[int]], pad_id: int, special_ids: set[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic padding to the batch's longest text: (input_ids, attention_mask, special-token mask)."""
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[row, : len(seq)] = 1
    special = attention == 0
    for sid in special_ids:
        special |= ids == sid
    return ids, attention, special


def load_mlm(folder: str) -> tuple[Any, Any, list[str]]:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model, info = AutoModelForMaskedLM.from_pretrained(
                folder, local_files_only=True, use_safetensors=True, output_loading_info=True
            )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"cannot load {folder} as a masked language model: {exc}") from exc
    if tokenizer.mask_token_id is None:
        raise ModelLoadError(f"the tokenizer of {folder} has no mask token; masked-LM adaptation needs one")
    missing = sorted(str(k) for k in info.get("missing_keys", ()))
    return model, tokenizer, missing


def mlm_loss(model: Any, inputs: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the masked positions only: the encoder runs on the batch, the MLM head (a vocabulary-sized
    projection, most of a step's cost when applied everywhere) only on the ~15% of tokens that are predicted."""
    head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
    if head is None:  # an architecture whose MLM head is named otherwise: the model's own (full-width) loss
        return model(input_ids=inputs, attention_mask=attention, labels=labels).loss
    hidden = model.base_model(input_ids=inputs, attention_mask=attention).last_hidden_state
    chosen = labels != -100
    logits = head(hidden[chosen])
    return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])


def head_parameters(model: Any) -> list[torch.nn.Parameter]:
    """The MLM head's own parameters (not those tied to the encoder's embeddings)."""
    body = {id(p) for p in model.base_model.parameters()}
    return [p for p in model.parameters() if id(p) not in body]


def lr_schedule(total: int, warm: int) -> Callable[[int], float]:
    span = max(1, total - warm)
    ramp = max(1, round(_WARMUP_FRACTION * span))

    def factor(step: int) -> float:  # step counts the full phase's steps from 0
        if step < ramp:
            return (step + 1) / ramp
        return max(0.0, (span - step) / max(1, span - ramp))

    return factor


def head_warmup_steps(max_steps: int, missing: Sequence[str]) -> int:
    """Steps that train only the MLM head: none when the checkpoint had its head, else a tenth (at most 50)."""
    if not any(".predictions." in key or key.startswith(("cls.", "lm_head.")) for key in missing):
        return 0
    return min(_MAX_HEAD_WARMUP, int(max_steps * HEAD_WARMUP_FRACTION))


def split_heldout(encoded: list[list[int]], seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """(held out, training) texts: a tenth, at most 64, drawn with ``seed``; none below 40 texts."""
    if len(encoded) < 40:
        return [], encoded
    n = min(64, len(encoded) // 10)
    picked = set(torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed + 1))[:n].tolist())
    return [e for i, e in enumerate(encoded) if i in picked], [e for i, e in enumerate(encoded) if i not in picked]


def heldout_loss(
    model: Any, held: Sequence[list[int]], pad_id: int, special_ids: set[int], mask_id: int, vocab_size: int,
    budget: Any, device: torch.device, dtype: torch.dtype | None,
) -> float | None:
    """Mean masked-LM loss on ``held`` with a fixed masking (seeded), in eval mode; None without held-out texts."""
    if not held:
        return None
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(int(budget.seed) + 2)
    losses: list[float] = []
    with torch.no_grad():
        for i in range(0, len(held), budget.batch_size):
            ids, attention, special = pad_batch(held[i : i + budget.batch_size], pad_id, special_ids)
            inputs, labels = mask_tokens(ids, special, mask_id=mask_id, vocab_size=vocab_size,
                                         probability=budget.mlm_probability, gen=gen)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = mlm_loss(model, inputs.to(device), attention.to(device), labels.to(device))
            losses.append(float(loss.float().cpu()))
    model.train(was_training)
    return float(sum(losses) / len(losses))
