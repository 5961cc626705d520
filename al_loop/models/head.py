"""The light learner: a logistic-regression head on frozen encoder features.

For classification the features are the base model's mean-pooled sentence
embeddings (as :meth:`TextModel.predict` returns them); for NER each word's
feature is the last hidden state of its first subword, and the head classifies
words into BIO tags. The encoder never changes, so features are computed once per
text and base model and cached in the process (:class:`FeatureEncoder`): a round
of the head learner re-encodes only texts it has not seen before, and fitting the
head takes well under a second for a few hundred labels.

Units and id spaces are those of :mod:`al_loop.models.model`: outputs are per text
in input order; ids index ``schema.tags``; words are ``words_of(text)`` offsets.

Artifacts: the head's weights are ``head.safetensors`` (``coef`` (k, d) and
``intercept`` (k,), float32) next to ``label_schema.json`` and ``manifest.json``
(``"learner": "head"``, the base model name under ``"base_model"``); the encoder
is the base model itself and is not copied. No pickles.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from al_loop.config import TrainingConfig, config_to_dict
from al_loop.data.align import spans_to_word_tags, word_tags_to_spans, words_of
from al_loop.data.schema import LabelSchema
from al_loop.errors import EmptyInputError, ModelLoadError, SchemaError
from al_loop.models.artifacts import make_manifest, read_artifact, write_artifact
from al_loop.models.linear import fit_label_head, fit_softmax, normalise, softmax
from al_loop.models.loading import resolve_model_path
from al_loop.models.model import (
    ModelOutput,
    TextModel,
    decode_label_probs,
    labelled_examples,
    prediction_metrics,
    stored_training_config,
)
from al_loop.models.source import mapping_record
from al_loop.types import Example, Span, TaskKind

log = logging.getLogger(__name__)

__all__ = ["HEAD_FILE", "FeatureEncoder", "HeadModel", "HeadReport", "clear_feature_cache"]

HEAD_FILE = "head.safetensors"
_MAX_CACHED_TEXTS = 400_000
_MAX_ENCODERS = 2


class FeatureEncoder:
    """Frozen features of one base model, cached per text (sha1 of the text).

    ``sentence(texts)``: (n, d) float32; ``words(texts)``: per text (n_words, d) float32.
    Thread-safe; the cache holds at most ``max_texts`` texts per kind (oldest dropped first).
    """

    def __init__(self, encoder: TextModel, max_texts: int = _MAX_CACHED_TEXTS) -> None:
        self.encoder = encoder
        self.max_texts = max_texts
        self._cache: dict[str, OrderedDict[str, np.ndarray]] = {"sentence": OrderedDict(), "words": OrderedDict()}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int:
        return int(getattr(self.encoder.model.config, "hidden_size", 0))

    def _get(self, kind: str, texts: Sequence[str]) -> list[np.ndarray]:
        keys = [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]
        with self._lock:
            cache = self._cache[kind]
            missing = sorted({k: i for i, k in reversed(list(enumerate(keys))) if k not in cache}.items())
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        if missing:
            new_texts = [texts[i] for _, i in missing]
            if kind == "sentence":
                vecs: list[np.ndarray] = list(self.encoder.sentence_vectors(new_texts))
            else:
                vecs = self.encoder.word_vectors(new_texts)
            with self._lock:
                for (k, _), v in zip(missing, vecs):
                    cache[k] = np.asarray(v, dtype=np.float32)
                found = {k: cache[k] for k in keys}
                while len(cache) > self.max_texts:
                    cache.popitem(last=False)
        else:
            with self._lock:
                found = {k: cache[k] for k in keys}
        return [found[k] for k in keys]

    def sentence(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(self._get("sentence", texts))

    def words(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._get("words", texts) if texts else []


_ENCODERS: OrderedDict[tuple[Any, ...], FeatureEncoder] = OrderedDict()
_ENCODERS_LOCK = threading.Lock()


def encoder_for(schema: LabelSchema, base_model: str, config: TrainingConfig) -> FeatureEncoder:
    """The process-wide cached encoder of ``base_model`` at ``config``'s length, stride, precision and device."""
    key = (resolve_model_path(base_model), config.max_length, config.window_stride, config.precision, config.device)
    with _ENCODERS_LOCK:
        if key in _ENCODERS:
            _ENCODERS.move_to_end(key)
            return _ENCODERS[key]
    encoder = FeatureEncoder(TextModel.create(schema, base_model, config, map_head=False))
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.setdefault(key, encoder)
        while len(_ENCODERS) > _MAX_ENCODERS:
            _ENCODERS.popitem(last=False)
    return encoder


def clear_feature_cache() -> None:
    """Drop every cached encoder and its features (tests, memory pressure)."""
    with _ENCODERS_LOCK:
        _ENCODERS.clear()


@dataclass
class HeadReport:
    """What :meth:`HeadModel.fit` did: ``n_train`` examples (texts), ``n_rows`` feature rows (texts or
    words), ``classes_seen`` label ids present in training, seconds for features and for the fit."""

    learner: str
    n_train: int
    n_rows: int
    classes_seen: int
    feature_seconds: float
    fit_seconds: float
    seconds: float
    cache_hits: int
    cache_misses: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HeadModel:
    """A logistic-regression head over a frozen :class:`FeatureEncoder`; same interface as :class:`TextModel`
    where a round uses it (``fit``, ``predict``, ``evaluate``, ``save``, ``schema``)."""

    learner = "head"

    def __init__(
        self,
        schema: LabelSchema,
        base_model: str,
        config: TrainingConfig,
        encoder: FeatureEncoder,
        coef: np.ndarray | None = None,
        intercept: np.ndarray | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.schema = schema
        self.base_model = base_model
        self.config = config
        self.encoder = encoder
        self.coef = coef
        self.intercept = intercept
        self.manifest = manifest

    @property
    def task(self) -> TaskKind:
        return self.schema.task

    @property
    def precision(self) -> str:
        return self.encoder.encoder.precision

    @classmethod
    def create(
        cls,
        schema: LabelSchema,
        base_model: str = "default",
        config: TrainingConfig = TrainingConfig(),  # noqa: B008  (frozen, immutable default)
        init_from: str | Path | None = None,
    ) -> HeadModel:
        """An untrained head over ``base_model``'s frozen features (``init_from`` is ignored: a head refits)."""
        return cls(schema, base_model, config, encoder_for(schema, base_model, config))

    @classmethod
    def load(cls, artifact_dir: str | Path, config: TrainingConfig | None = None) -> HeadModel:
        """Load a head artifact (ModelLoadError when it is not one or its weights do not fit the schema)."""
        from safetensors.numpy import load_file

        schema, manifest = read_artifact(artifact_dir)
        if manifest.get("learner") != "head":
            raise ModelLoadError(f"artifact {artifact_dir} is not a head model")
        if config is None:
            config = stored_training_config(manifest, artifact_dir)
        try:
            tensors = load_file(str(Path(artifact_dir) / HEAD_FILE))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"artifact {artifact_dir}: cannot read {HEAD_FILE}: {exc}") from exc
        coef, intercept = tensors.get("coef"), tensors.get("intercept")
        if coef is None or intercept is None or coef.shape[0] != schema.num_outputs or intercept.shape != (
            schema.num_outputs,
        ):
            raise SchemaError(f"artifact {artifact_dir}: head weights do not match the label schema")
        base = str(manifest.get("base_model", "default"))
        return cls(schema, base, config, encoder_for(schema, base, config), coef, intercept, manifest)

    def save(self, artifact_dir: str | Path, extra_manifest: dict[str, Any] | None = None) -> Path:
        from safetensors.numpy import save_file

        if self.coef is None or self.intercept is None:
            raise EmptyInputError("cannot save an untrained head")
        manifest = make_manifest(
            self.schema,
            self.base_model,
            training_config=config_to_dict(self.config),
            precision=self.precision,
            extra=extra_manifest,
        )
        manifest["learner"] = self.learner
        record = mapping_record(self.schema, self.base_model, "the head learner refits its logistic regression on "
                                "this project's labels (a convex fit: a start would not change it); the encoder is "
                                "the source's")
        if record is not None:
            manifest["label_mapping"] = record
        coef, intercept = self.coef, self.intercept

        def write_files(tmp: Path) -> None:
            weights = {"coef": np.ascontiguousarray(coef), "intercept": np.ascontiguousarray(intercept)}
            save_file(weights, str(tmp / HEAD_FILE))

        path = write_artifact(artifact_dir, write_files, self.schema, manifest)
        self.manifest = manifest
        return path

    # ------------------------------------------------------------------ training

    def _labelled(self, examples: Sequence[Example]) -> list[Example]:
        return labelled_examples(self.schema, examples)

    def fit(self, examples: Sequence[Example], *, progress: Callable[[float], None] | None = None) -> HeadReport:
        """Fit the head on the labelled ``examples`` (unlabelled ones are ignored)."""
        started = time.perf_counter()
        labelled = self._labelled(examples)
        if not labelled:
            raise EmptyInputError("no labelled examples to train on")
        hits, misses = self.encoder.hits, self.encoder.misses
        texts = [ex.text for ex in labelled]
        label2id = self.schema.label2id
        k = self.schema.num_outputs
        c, seed = self.config.head_c, self.config.seed
        if self.task is TaskKind.NER:
            vecs = self.encoder.words(texts)
            t_feat = time.perf_counter()
            rows: list[np.ndarray] = []
            ys: list[int] = []
            for ex, v in zip(labelled, vecs):
                tags = spans_to_word_tags(words_of(ex.text), list(ex.spans or ()))
                rows.append(v)
                ys.extend(label2id[t] for t in tags)
            x = normalise(np.concatenate(rows)) if rows else np.zeros((0, self.encoder.dim), np.float32)
            y = np.asarray(ys, dtype=np.int64)
            if len(y) == 0:
                raise EmptyInputError("no trainable tokens in the labelled examples (all texts empty?)")
            self.coef, self.intercept = fit_softmax(x, y, k, c, seed)
            seen = len(np.unique(y))
        else:
            x = normalise(self.encoder.sentence(texts))
            t_feat = time.perf_counter()
            self.coef, self.intercept, seen = fit_label_head(x, labelled, self.schema, c, seed)
        done = time.perf_counter()
        if progress is not None:
            progress(1.0)
        return HeadReport(
            learner=self.learner,
            n_train=len(labelled),
            n_rows=int(x.shape[0]),
            classes_seen=int(seen),
            feature_seconds=round(t_feat - started, 3),
            fit_seconds=round(done - t_feat, 3),
            seconds=round(done - started, 3),
            cache_hits=self.encoder.hits - hits,
            cache_misses=self.encoder.misses - misses,
        )

    # ------------------------------------------------------------------ inference

    def _logits(self, x: np.ndarray) -> np.ndarray:
        if self.coef is None or self.intercept is None:
            raise EmptyInputError("the head is not trained yet")
        return np.asarray(normalise(x) @ self.coef.T + self.intercept, dtype=np.float64)

    def predict(self, texts: Sequence[str], *, embeddings: bool = True) -> ModelOutput:
        texts = list(texts)
        for i, item in enumerate(texts):
            if not isinstance(item, str):
                raise TypeError(f"texts[{i}] is {type(item).__name__}, not str")
        dim = self.encoder.dim
        if self.task is TaskKind.NER:
            vecs = self.encoder.words(texts)
            token_probs: list[np.ndarray] = []
            predicted: list[tuple[Span, ...]] = []
            all_words: list[list[tuple[int, int]]] = []
            tags = self.schema.tags
            for text, v in zip(texts, vecs):
                words = words_of(text)
                all_words.append(words)
                tp = softmax(self._logits(v)) if len(v) else np.zeros((0, len(tags)), dtype=np.float32)
                token_probs.append(tp)
                predicted.append(tuple(word_tags_to_spans(words, [tags[k] for k in tp.argmax(axis=1)])))
            emb = (
                np.stack([v.mean(axis=0) if len(v) else np.zeros(dim, np.float32) for v in vecs])
                if embeddings and vecs
                else np.zeros((len(texts), dim if embeddings else 0), dtype=np.float32)
            )
            return ModelOutput(emb.astype(np.float32), None, token_probs, all_words, predicted)
        x = self.encoder.sentence(texts)
        z = self._logits(x)
        probs = (1.0 / (1.0 + np.exp(-z))).astype(np.float32) if self.schema.multi_label else softmax(z)
        return ModelOutput(
            embeddings=x if embeddings else np.zeros((len(texts), 0), dtype=np.float32),
            probs=probs,
            token_probs=None,
            words=None,
            predicted=self.decode_probs(probs),
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) frozen base-model sentence embeddings (cached; no trained head needed)."""
        return self.encoder.sentence(list(texts))

    def decode_probs(self, probs: np.ndarray) -> list[tuple[str, ...]]:
        return decode_label_probs(self.schema, probs)

    def evaluate(self, examples: Sequence[Example]) -> dict[str, Any]:
        labelled = self._labelled(examples)
        if not labelled:
            raise EmptyInputError("no labelled examples to evaluate")
        out = self.predict([ex.text for ex in labelled], embeddings=False)
        return prediction_metrics(self.schema, labelled, out.predicted)
