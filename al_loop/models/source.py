"""Starting from a source model: its head rows carried over to a new label schema by label name.

A project's base model may be a model that already predicts labels: another project's model version
(an al-loop artifact) or a transformers checkpoint with a classification or token-classification head.
The encoder is always the source's. Of the head, the rows (output units) of labels present in both
schemas are kept by name (for NER the BIO tags: ``B-X`` and ``I-X`` are kept when ``X`` is in both, ``O``
always), labels only in the project get new rows, labels only in the source are dropped. What happened
is a :class:`HeadMapping`, logged and written to the new version's ``manifest.json`` under
``"label_mapping"``.

Rows are carried only between heads over the same features:

- al-loop's normalised linear heads (``pooling: mean`` / ``token_head: probe``, the default) take the rows
  of a source with one of those heads (``pooled_head.safetensors``) or of a **head-learner** source
  (``head.safetensors``: its regression reads exactly those features of its base encoder, which is then
  the encoder). New rows start where a fresh head starts: the logistic regression of the frozen features
  (LP-FT), fitted on the project's labels, of which only the new labels' rows are used. A head whose every
  row was carried trains at the body's learning rate, as a warm start does.
- the checkpoint's transformers head (``pooling: cls`` / ``token_head: hf``) takes the rows of a
  transformers head (an al-loop version trained with that head, or a fine-tuned checkpoint): every head
  parameter indexed by label (leading dimension = the number of labels) is remapped by name, new rows are
  drawn as transformers initialises them (normal, ``initializer_range``; bias 0), seeded.

Other pairs keep only the encoder (``carried: false`` with the reason in ``note``). A source al-loop version
of the other task kind is refused (ModelLoadError); a checkpoint head of the other kind is dropped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from al_loop.data.schema import LabelSchema
from al_loop.errors import AlLoopError, ModelLoadError
from al_loop.model_paths import artifact_manifest, source_folder
from al_loop.models.artifacts import read_artifact
from al_loop.models.pooled import (
    POOLED_HEAD_FILE,
    MeanPooledClassifier,
    NormalisedTokenClassifier,
    has_pooled_head,
)

log = logging.getLogger(__name__)

__all__ = ["HeadMapping", "SourceHead", "apply_source_head", "carried_rows", "find_source_head", "mapping_record"]

HEAD_LEARNER_FILE = "head.safetensors"  # al_loop.models.head.HEAD_FILE (head.py imports this package's model)
_HF_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class SourceHead:
    """A source model's labelled head: ``kind`` "pooled" (al-loop's normalised linear head), "head" (the head
    learner's regression) or "hf" (a transformers head); ``tags`` in its output order; ``task`` "ner" or
    "classification"."""

    folder: str
    kind: str
    task: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class HeadMapping:
    """Which output rows of a new model came from the source (``kept``), which are new (``new``) and which
    source rows were dropped; ``shared`` = tags in both schemas (``kept`` is empty when nothing was carried)."""

    source: str
    source_kind: str
    source_tags: tuple[str, ...]
    shared: tuple[str, ...]
    kept: tuple[str, ...]
    new: tuple[str, ...]
    dropped: tuple[str, ...]
    carried: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "source_kind": self.source_kind, "source_tags": list(self.source_tags),
                "shared": list(self.shared), "kept": list(self.kept), "new": list(self.new),
                "dropped": list(self.dropped), "carried": self.carried, "note": self.note}


def find_source_head(name: str) -> SourceHead | None:
    """The labelled head of base model ``name``, or None when it has none (a plain encoder such as MiniLM)."""
    folder = Path(source_folder(name))
    if artifact_manifest(folder) is not None:
        schema, manifest = read_artifact(folder)
        kind = "head" if manifest.get("learner") == "head" else ("pooled" if has_pooled_head(folder) else "hf")
        return SourceHead(str(folder), kind, schema.task.value, schema.tags)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    archs = [str(a) for a in config.get("architectures") or []] if isinstance(config, dict) else []
    task = ("ner" if any(a.endswith("ForTokenClassification") for a in archs)
            else "classification" if any(a.endswith("ForSequenceClassification") for a in archs) else None)
    id2label = config.get("id2label") if task else None
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        tags = tuple(str(id2label.get(str(i), id2label.get(i, ""))) for i in range(len(id2label)))
    except TypeError:
        return None
    return SourceHead(str(folder), "hf", str(task), tags)


def _mapping(src: SourceHead, schema: LabelSchema, carried: bool, note: str) -> HeadMapping:
    source_tags = set(src.tags)
    shared = tuple(t for t in schema.tags if t in source_tags)
    kept = shared if carried else ()
    return HeadMapping(src.folder, src.kind, src.tags, shared, kept, tuple(t for t in schema.tags if t not in kept),
                       tuple(t for t in src.tags if t not in set(schema.tags)), carried, note)


def mapping_record(schema: LabelSchema, base_model: str, note: str) -> dict[str, Any] | None:
    """The manifest record of a model that carries no head rows (the head learner): the labels the source
    shares, ``carried: false`` and ``note``; None without a labelled source head or when it cannot be read."""
    try:
        src = find_source_head(base_model)
    except AlLoopError:  # the version's files are gone or unreadable: the round's own load reports that
        return None
    return None if src is None else _mapping(src, schema, False, note).to_dict()


def apply_source_head(model: Any, schema: LabelSchema, base_model: str, *, seed: int) -> HeadMapping | None:
    """Copy the source head's rows of shared labels into ``model``'s new head (see the module docstring);
    None when ``base_model`` has no labelled head. Logs the mapping."""
    src = find_source_head(base_model)
    if src is None:
        return None
    if src.task != schema.task.value:
        if src.kind != "hf":
            raise ModelLoadError(f"model {base_model} is an al-loop {src.task} model version; a {schema.task.value} "
                                 "project cannot start from it (the task kinds differ)")
        mapping = _mapping(src, schema, False, f"the source's transformers head is a {src.task} head: not carried")
    elif isinstance(model, MeanPooledClassifier | NormalisedTokenClassifier):  # al-loop's normalised linear head
        mapping = _into_linear_head(model, schema, src)
    else:
        mapping = _into_hf_head(model, schema, src, seed)
    log.info("source model %s (%s head): kept %s, new %s, dropped %s%s", src.folder, src.kind, list(mapping.kept),
             list(mapping.new), list(mapping.dropped), "" if mapping.carried else f" ({mapping.note})")
    return mapping


def _into_linear_head(model: Any, schema: LabelSchema, src: SourceHead) -> HeadMapping:
    from safetensors.numpy import load_file

    if src.kind == "hf":
        return _mapping(src, schema, False, "the source has a transformers head and the project al-loop's "
                        "normalised linear head (training.pooling: mean / token_head: probe); set pooling: cls "
                        "(classification) or token_head: hf (NER) to carry it")
    file, keys = (POOLED_HEAD_FILE, ("weight", "bias")) if src.kind == "pooled" else (HEAD_LEARNER_FILE,
                                                                                       ("coef", "intercept"))
    try:
        state = load_file(str(Path(src.folder) / file))
        weight, bias = np.asarray(state[keys[0]], np.float32), np.asarray(state[keys[1]], np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read the source head {Path(src.folder) / file}: {exc}") from exc
    want = (len(src.tags), int(model.classifier.in_features))
    if weight.shape != want or bias.shape != (len(src.tags),):
        return _mapping(src, schema, False, f"the source head's shape {weight.shape} does not fit {want}")
    mapping = _mapping(src, schema, True, "rows of shared labels copied from the source head")
    if mapping.kept:
        rows = [src.tags.index(t) for t in mapping.kept]
        ids = [schema.tags.index(t) for t in mapping.kept]
        with torch.no_grad():
            model.classifier.weight[ids] = torch.as_tensor(weight[rows], dtype=model.classifier.weight.dtype)
            model.classifier.bias[ids] = torch.as_tensor(bias[rows], dtype=model.classifier.bias.dtype)
    return mapping


def _into_hf_head(model: Any, schema: LabelSchema, src: SourceHead, seed: int) -> HeadMapping:
    from safetensors.torch import load_file

    if src.kind != "hf":
        return _mapping(src, schema, False, "the source has al-loop's normalised linear head and the project the "
                        "checkpoint's transformers head (training.pooling: cls / token_head: hf); drop that setting "
                        "to carry it")
    file = Path(src.folder) / _HF_WEIGHTS
    if not file.is_file():
        return _mapping(src, schema, False, f"the source's head weights are not in one {_HF_WEIGHTS}")
    try:
        state = load_file(str(file))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the source weights {file}: {exc}") from exc
    prefix = (getattr(model, "base_model_prefix", "") or "") + "."
    mapping = _mapping(src, schema, True, "rows of shared labels copied from the source's transformers head")
    n_src, n_new = len(src.tags), len(schema.tags)
    rows = [src.tags.index(t) for t in mapping.kept]
    ids = [schema.tags.index(t) for t in mapping.kept]
    fresh = [i for i, t in enumerate(schema.tags) if t not in set(mapping.kept)]
    gen = torch.Generator().manual_seed(int(seed))
    std = float(getattr(model.config, "initializer_range", 0.02) or 0.02)
    found = False
    with torch.no_grad():
        for name, param in model.named_parameters():
            source = state.get(name)
            if name.startswith(prefix) or source is None or param.ndim == 0 or source.ndim != param.ndim:
                continue
            if param.shape[0] != n_new or source.shape[0] != n_src or param.shape[1:] != source.shape[1:]:
                continue
            found = True  # indexed by label: every row is the source's row of that label, or new
            if fresh:
                init = torch.randn((len(fresh), *param.shape[1:]), generator=gen) * std if param.ndim > 1 else \
                    torch.zeros(len(fresh))
                param[fresh] = init.to(param.dtype)
            if ids:
                param[ids] = source[rows].to(param.dtype)
    if not found:
        return _mapping(src, schema, False, "no head parameter of the source is indexed by its labels")
    return mapping


def carried_rows(
    classifier: torch.nn.Linear, schema: LabelSchema, mapping: HeadMapping, coef: np.ndarray, intercept: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The LP-FT start of a head with carried rows: the regression's rows (``coef`` (k, d), ``intercept`` (k,)) for
    the new labels, the classifier's current (source) rows for the kept ones."""
    coef, intercept = np.array(coef, dtype=np.float32), np.array(intercept, dtype=np.float32)
    ids = [schema.tags.index(t) for t in mapping.kept]
    if ids:
        coef[ids] = classifier.weight.detach().float().cpu().numpy()[ids]
        intercept[ids] = classifier.bias.detach().float().cpu().numpy()[ids]
    return coef, intercept
