"""The held-out estimate of a round without a test split, warm-started along a chain of estimate models.

A project without a test split scores each round on held-out labels: a model trained without them
(:mod:`al_loop.rounds.learning`). Fitting that model from the base model every round cost a from-scratch
fine-tune per round, while the round's own model warm-starts. Here the estimate model warm-starts too, from the
previous round's estimate model, which is honest only if that model never trained on a label held out now:

- :func:`stable_holdout` holds out an item by a hash of its id, so an item's side never changes as labels are
  added (the classic split is redrawn every round). With ``stratify``, a class with fewer than ``folds``
  examples stays in training (as in :func:`~al_loop.rounds.learning.holdout_split`); when it grows past that, a
  few of its items move to the held-out side.
- :class:`EstimateChain` keeps the last estimate model in one folder with the ids it was trained on, and hands it
  out only when those ids are all on the training side now (else the estimate fits from the base model and the
  chain starts again). The folder is replaced atomically, model and ids together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from al_loop.folders import replace_folder
from al_loop.types import Example

log = logging.getLogger("al_loop.rounds")

__all__ = ["EstimateChain", "stable_holdout"]

_CHAIN_FILE = "estimate.json"


def _unit_hash(seed: int, item_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def stable_holdout(
    labelled: Sequence[Example], folds: int, seed: int, *, stratify: bool
) -> tuple[list[Example], list[Example]]:
    """(train, held out): an item is held out when the hash of ``(seed, item id)`` falls in the first
    ``1 / folds`` of ``[0, 1)``; with ``stratify`` a class (first label) with fewer than ``folds`` examples stays
    in training. Order within each side is ``labelled``'s."""
    counts: dict[str, int] = {}
    if stratify:
        for ex in labelled:
            key = (ex.labels or ("",))[0]
            counts[key] = counts.get(key, 0) + 1
    train: list[Example] = []
    held: list[Example] = []
    for ex in labelled:
        small = stratify and counts[(ex.labels or ("",))[0]] < folds
        (held if not small and _unit_hash(seed, str(ex.item_id)) < 1.0 / folds else train).append(ex)
    return train, held


@dataclass(frozen=True)
class EstimateChain:
    """The last estimate model of a project (``folder``), and the ids it was trained on.

    ``key`` names what the model was made from (base model, label schema): another key never continues it.
    """

    folder: Path

    def source(self, key: str, train: Iterable[Example]) -> tuple[Path, int] | None:
        """``(model folder, labels it was trained on)`` when the chain's model may start this estimate: same
        ``key`` and every id it trained on is in ``train``; else None."""
        meta = self._meta()
        if meta is None or meta.get("key") != key:
            return None
        trained = meta.get("ids")
        if not isinstance(trained, list) or not set(map(str, trained)) <= {str(ex.item_id) for ex in train}:
            return None
        model_dir = self.folder / "model"
        return (model_dir, len(trained)) if model_dir.is_dir() else None

    def save(self, model: Any, key: str, train: Sequence[Example]) -> None:
        """Replace the chain's model by ``model`` (trained on ``train``); a failure only ends the chain."""

        def fill(tmp: Path) -> None:
            model.save(tmp / "model")
            (tmp / _CHAIN_FILE).write_text(json.dumps({"key": key, "ids": [str(ex.item_id) for ex in train]}))

        try:
            replace_folder(self.folder, fill)
        except OSError as exc:
            log.warning("could not keep the estimate model (%s); the next estimate starts from the base model", exc)
            self.clear()

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _meta(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.folder / _CHAIN_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
