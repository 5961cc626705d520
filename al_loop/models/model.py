"""TextModel: one transformer with a classification or BIO token head.

Units and id spaces:

- Inputs are lists of texts; outputs are per text, **in input order** (position
  ``i`` of every output array belongs to ``texts[i]``; positions never leave the
  call, item ids are the caller's business).
- Output ids are indices into ``schema.tags`` (class names for classification,
  ``O``/``B-X``/``I-X`` for NER). The Hugging Face config carries the same
  ``id2label``/``label2id``.
- Words are ``al_loop.data.align.words_of(text)`` character offsets
  (end-exclusive); spans are end-exclusive character offsets into the text.
- Lengths (``max_length``, ``window_stride``) are in tokenizer tokens, specials
  included.

Decisions:

- Multi-label classification: sigmoid per label; a label is predicted when its
  probability is >= 0.5 (:data:`MULTI_LABEL_THRESHOLD`), and the top label is
  always predicted when none passes, so every text gets at least one label.
- Long texts are covered by overlapping windows (``return_overflowing_tokens``,
  stride ``window_stride``); nothing is cut. Classification averages window
  probabilities and embeddings weighted by window token count; NER takes each
  word's probabilities from the window in which its first subword is farthest
  from a window edge. A word without any first subword (the tokenizer cut
  elsewhere than ``words_of``) takes the probabilities of the token covering its
  first character, or uniform ones if no token covers it (characters the
  tokenizer drops).
- Embeddings: mean of the last hidden state over the attention mask (specials
  included, as sentence-transformers does for MiniLM), float32.
- Training uses the same windows: every window of a long text is a training
  item (classification: with the text's labels; NER: first-subword labels of the
  words that start inside the window, other tokens ignored). Unlabelled examples
  passed to :meth:`TextModel.fit` are skipped (logged).
- Weights stay float32 and training uses bf16 autocast (see :func:`pick_precision`); with bf16 precision and
  ``config.bf16_weights`` :meth:`TextModel.predict` runs a copy whose linear layers hold the bf16 weights autocast
  would multiply with (:func:`bf16_copy`: the same numbers, no per-batch casting).
- With ``config.frozen_layers(task)`` = k > 0 (al-loop's heads only) the embeddings and the lower k layers are
  frozen and their outputs cached per window (:mod:`al_loop.models.frozen`).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from al_loop.config import TrainingConfig, config_to_dict
from al_loop.data.align import (
    check_spans,
    first_subword_labels,
    spans_to_word_tags,
    token_to_word,
    word_tags_to_spans,
    words_of,
)
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError, EmptyInputError, ModelLoadError, SchemaError
from al_loop.models.artifacts import make_manifest, read_artifact, write_artifact
from al_loop.models.linear import fit_label_head, fit_softmax, normalise
from al_loop.models.loading import (
    pick_device,
    pick_precision,
    precision_name,
    quiet_transformers,
    resolve_model_path,
    to_device,
)
from al_loop.models.pooled import MeanPooledClassifier, NormalisedTokenClassifier, has_pooled_head
from al_loop.models.source import HeadMapping, apply_source_head, carried_rows
from al_loop.training.metrics import classification_metrics, ner_metrics
from al_loop.training.trainer import IGNORE_INDEX, Feature, LossKind, TrainReport, split_train_val, train_loop
from al_loop.types import Example, Span, TaskKind

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

__all__ = ["MULTI_LABEL_THRESHOLD", "ModelOutput", "TextModel", "TrainReport"]

MULTI_LABEL_THRESHOLD = 0.5
"""Sigmoid probability at or above which a multi-label class is predicted."""

_TEXT_CHUNK = 2048
"""Texts tokenised and scored together: windows are length-sorted inside one chunk."""


@dataclass
class ModelOutput:
    """Predictions for ``n`` texts, position ``i`` = ``texts[i]``.

    ``embeddings``: (n, d) float32 mean-pooled last hidden state, windows
    averaged; shape (n, 0) when ``predict(..., embeddings=False)``.
    ``probs``: classification (n, k) float32, k = ``len(schema.tags)``, softmax
    (single-label, rows sum to 1) or independent sigmoids (multi-label); None for NER.
    ``token_probs``: NER, per text a (n_words, n_tags) float32 array (rows sum to 1)
    for the words ``words[i]``; None for classification.
    ``words``: NER, per text the ``words_of(text)`` character offsets; None for classification.
    ``predicted``: per text a tuple of label names (classification) or of Spans (NER).
    """

    embeddings: np.ndarray
    probs: np.ndarray | None
    token_probs: list[np.ndarray] | None
    words: list[list[tuple[int, int]]] | None
    predicted: list[tuple[str, ...]] | list[tuple[Span, ...]]


@dataclass
class _Window:
    text: int  # position of the text in the chunk
    ids: list[int]
    offsets: list[tuple[int, int]]


def _content_range(offsets: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """Positions of the first and last non-special token of a window, or None when it has none."""
    pos = [i for i, (s, e) in enumerate(offsets) if e > s]
    return (pos[0], pos[-1]) if pos else None


def _words_in_window(
    words: Sequence[tuple[int, int]], starts: Sequence[int], offsets: Sequence[tuple[int, int]], rng: tuple[int, int]
) -> tuple[int, int]:
    """Slice ``[lo, hi)`` of the words whose first character lies inside the window's character range."""
    lo_char, hi_char = offsets[rng[0]][0], offsets[rng[1]][1]
    return bisect_left(starts, lo_char), bisect_left(starts, hi_char)


class TextModel:
    """A fine-tunable transformer for one :class:`LabelSchema` (NER or classification).

    Build with :meth:`create` (base model, optional warm start) or :meth:`load`
    (saved artifact). Attributes: ``schema``, ``base_model`` (the name given at
    creation, kept across warm starts), ``config``, ``device``, ``precision``
    (``"bf16"`` or ``"fp32"``), ``manifest`` (of the artifact it was loaded from,
    else None), ``model`` and ``tokenizer`` (the Hugging Face objects).
    """

    def __init__(
        self,
        schema: LabelSchema,
        base_model: str,
        config: TrainingConfig,
        model: PreTrainedModel,
        tokenizer: Any,
        *,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        fresh_head: bool,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.schema = schema
        self.base_model = base_model
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.manifest = manifest
        self.head_mapping: HeadMapping | None = None  # rows carried from a source model's head (models/source.py)
        self._fresh_head = fresh_head
        self.warm_started = False  # made from a previous version's weights (create(init_from=...))
        self._scoring: Any = None  # bf16 copy of the weights for inference (see _scoring_model), made lazily
        max_pos = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        # BERT-like models accept max_position_embeddings tokens; RoBERTa-like reserve 2 for the padding offset
        limit = (
            max_pos - 2
            if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert")
            else max_pos
        )
        self.max_length = min(config.max_length, limit) if limit > 0 else config.max_length
        if config.window_stride >= self.max_length // 2:
            raise ConfigError(f"window_stride {config.window_stride} too large for max_length {self.max_length}")
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.model.to(device)  # type: ignore[arg-type]  # transformers types .to() oddly
        frozen = config.frozen_layers(schema.task)
        if isinstance(model, MeanPooledClassifier | NormalisedTokenClassifier) and frozen > 0:
            model.freeze_lower(frozen, config.frozen_cache_mb, extra=f"max_length={self.max_length}")
        self.model.eval()

    # ------------------------------------------------------------------ construction

    @property
    def precision(self) -> str:
        return precision_name(self.autocast_dtype)

    @property
    def task(self) -> TaskKind:
        return self.schema.task

    @classmethod
    def create(
        cls,
        schema: LabelSchema,
        base_model: str = "default",
        config: TrainingConfig = TrainingConfig(),  # noqa: B008  (frozen, immutable default)
        init_from: str | Path | None = None,
        *,
        map_head: bool = True,
    ) -> TextModel:
        """A model for ``schema`` on top of ``base_model`` (see :func:`resolve_model_path`).

        Without ``init_from`` the head is new (randomly initialised from
        ``config.seed``, so equal calls give equal models); when ``base_model`` has a labelled head (another
        project's version, a fine-tuned checkpoint) and ``map_head``, the rows of labels both schemas share are
        carried over by name (:mod:`al_loop.models.source`; ``head_mapping`` says which). With ``init_from`` (a
        previous artifact folder) its weights, head included, are the starting
        point (warm start); its label schema must equal ``schema`` (SchemaError
        otherwise). Raises ModelLoadError when the model cannot be found or read.
        """
        device = pick_device(config.device)
        dtype = pick_precision(config.precision, device)
        if init_from is not None:
            art_schema, manifest = read_artifact(init_from)
            if art_schema.hash != schema.hash:
                raise SchemaError(
                    f"cannot warm-start from {init_from}: its label schema {art_schema.labels} ({art_schema.hash}) "
                    f"differs from {schema.labels} ({schema.hash})"
                )
            model, tokenizer = _load_hf(str(init_from), schema, from_artifact=True)
            warm = cls(
                schema,
                base_model,
                config,
                model,
                tokenizer,
                device=device,
                autocast_dtype=dtype,
                fresh_head=False,
                manifest=manifest,
            )
            warm.warm_started = True
            return warm
        path = resolve_model_path(base_model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model, tokenizer = _load_hf(path, schema, from_artifact=False, probe_head=config.probes_head(schema.task))
            mapping = apply_source_head(model, schema, base_model, seed=config.seed) if map_head else None
        # a head whose every row came from the source trains at the body's rate, as a warm start does
        whole = mapping is not None and mapping.carried and not mapping.new
        made = cls(schema, base_model, config, model, tokenizer, device=device, autocast_dtype=dtype,
                   fresh_head=not whole)
        made.head_mapping = mapping
        return made

    @classmethod
    def load(cls, artifact_dir: str | Path, config: TrainingConfig | None = None) -> TextModel:
        """Load a saved artifact; the schema comes from its ``label_schema.json``.

        ``config`` defaults to the training config stored in the manifest (keys
        this version does not know are dropped). Raises ModelLoadError for a
        missing/unreadable folder and SchemaError when the schema, the manifest
        and the model's ``id2label`` disagree.
        """
        schema, manifest = read_artifact(artifact_dir)
        if config is None:
            config = stored_training_config(manifest, artifact_dir)
        device = pick_device(config.device)
        dtype = pick_precision(config.precision, device)
        model, tokenizer = _load_hf(str(artifact_dir), schema, from_artifact=True)
        return cls(
            schema,
            str(manifest.get("base_model", "")),
            config,
            model,
            tokenizer,
            device=device,
            autocast_dtype=dtype,
            fresh_head=False,
            manifest=manifest,
        )

    def save(self, artifact_dir: str | Path, extra_manifest: dict[str, Any] | None = None) -> Path:
        """Write the model atomically to ``artifact_dir`` (replacing it) and return its absolute path.

        Files: safetensors weights + config (with id2label), tokenizer files,
        ``label_schema.json`` and ``manifest.json`` (``extra_manifest`` under
        ``"extra"``; must be JSON-serialisable). See :mod:`al_loop.models.artifacts`.
        """
        manifest = make_manifest(
            self.schema,
            self.base_model,
            training_config=config_to_dict(self.config),
            precision=self.precision,
            extra=extra_manifest,
        )
        if self.head_mapping is not None:
            manifest["label_mapping"] = self.head_mapping.to_dict()

        def write_files(tmp: Path) -> None:
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))

        path = write_artifact(artifact_dir, write_files, self.schema, manifest)
        self.manifest = manifest
        return path

    # ------------------------------------------------------------------ inference

    def predict(self, texts: Sequence[str], *, embeddings: bool = True) -> ModelOutput:
        """Probabilities, decoded labels/spans and (optionally) embeddings for ``texts``, in input order.

        Runs under ``torch.inference_mode`` in length-sorted batches of
        ``config.inference_batch_size`` windows with dynamic padding.
        """
        texts = list(texts)
        for i, item in enumerate(texts):
            if not isinstance(item, str):
                raise TypeError(f"texts[{i}] is {type(item).__name__}, not str")
        ner = self.task is TaskKind.NER
        n_tags = self.schema.num_outputs
        dim = int(getattr(self.model.config, "hidden_size", 0)) if embeddings else 0
        emb_parts: list[np.ndarray] = []
        probs_parts: list[np.ndarray] = []
        token_probs: list[np.ndarray] = []
        all_words: list[list[tuple[int, int]]] = []
        for c0 in range(0, len(texts), _TEXT_CHUNK):
            chunk = texts[c0 : c0 + _TEXT_CHUNK]
            windows = self._windows(chunk)
            win_out, win_emb = self._run_windows(windows, want_hidden=embeddings)
            by_text: list[list[int]] = [[] for _ in chunk]
            for j, w in enumerate(windows):
                by_text[w.text].append(j)
            if embeddings:
                emb_parts.append(self._pool_windows(by_text, windows, win_emb, width=dim))
            if ner:
                for t, text in enumerate(chunk):
                    words = words_of(text)
                    all_words.append(words)
                    token_probs.append(
                        self._word_probs(
                            words, [windows[j] for j in by_text[t]], [win_out[j] for j in by_text[t]], n_tags
                        )
                    )
            else:
                probs_parts.append(self._pool_windows(by_text, windows, win_out, width=n_tags))
        emb = np.concatenate(emb_parts) if emb_parts else np.zeros((len(texts), dim), dtype=np.float32)
        if not ner:
            probs = np.concatenate(probs_parts) if probs_parts else np.zeros((0, n_tags), dtype=np.float32)
            return ModelOutput(
                embeddings=emb.astype(np.float32, copy=False),
                probs=probs.astype(np.float32, copy=False),
                token_probs=None,
                words=None,
                predicted=self.decode_probs(probs),
            )
        predicted: list[tuple[Span, ...]] = []
        for words, tp in zip(all_words, token_probs):
            tags = [self.schema.tags[k] for k in tp.argmax(axis=1)] if len(words) else []
            predicted.append(tuple(word_tags_to_spans(words, tags)))
        return ModelOutput(
            embeddings=emb.astype(np.float32, copy=False),
            probs=None,
            token_probs=token_probs,
            words=all_words,
            predicted=predicted,
        )

    def decode_probs(self, probs: np.ndarray) -> list[tuple[str, ...]]:
        """Label names from classification probabilities (n, k): argmax, or the multi-label threshold rule."""
        return decode_label_probs(self.schema, probs)

    def sentence_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 mean-pooled last hidden states of ``texts`` (the embeddings of :meth:`predict`)."""
        return self.predict(texts, embeddings=True).embeddings

    def word_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text a (n_words, d) float32 array: the last hidden state of each ``words_of(text)`` word's first
        subword (taken from the window where it is most central, as :meth:`predict` does for NER)."""
        dim = int(getattr(self.model.config, "hidden_size", 0))
        out: list[np.ndarray] = []
        texts = list(texts)
        for c0 in range(0, len(texts), _TEXT_CHUNK):
            chunk = texts[c0 : c0 + _TEXT_CHUNK]
            windows = self._windows(chunk)
            hidden, _ = self._run_windows(windows, want_hidden=False, token_hidden=True)
            by_text: list[list[int]] = [[] for _ in chunk]
            for j, w in enumerate(windows):
                by_text[w.text].append(j)
            for t, text in enumerate(chunk):
                words = words_of(text)
                out.append(
                    self._word_probs(words, [windows[j] for j in by_text[t]], [hidden[j] for j in by_text[t]], dim, 0.0)
                )
        return out

    def _windows(self, texts: Sequence[str]) -> list[_Window]:
        """Tokenise ``texts`` into overlapping windows of at most ``max_length`` tokens (specials included)."""
        if not texts:
            return []
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            stride=self.config.window_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        mapping = enc["overflow_to_sample_mapping"]
        return [
            _Window(int(mapping[j]), list(enc["input_ids"][j]), [(int(s), int(e)) for s, e in enc["offset_mapping"][j]])
            for j in range(len(enc["input_ids"]))
        ]

    def _autocast(self) -> Any:
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _run_windows(
        self, windows: Sequence[_Window], *, want_hidden: bool, token_hidden: bool = False
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Run the model on every window, longest first, and return per-window outputs in window order.

        Outputs: classification (k,) probabilities, or NER (len(ids), n_tags)
        token probabilities (with ``token_hidden``: the (len(ids), d) last hidden
        states instead); plus (n_windows, d) mean-pooled embeddings (d = 0 if not wanted).
        """
        want_hidden = want_hidden or token_hidden
        ner = self.task is TaskKind.NER
        dim = int(getattr(self.model.config, "hidden_size", 0)) if want_hidden else 0
        outs: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(windows)
        embs = np.zeros((len(windows), dim), dtype=np.float32)
        order = sorted(range(len(windows)), key=lambda j: -len(windows[j].ids))
        bs = self.config.inference_batch_size
        self.model.eval()
        scorer = self._scoring_model()
        with torch.inference_mode():
            for b0 in range(0, len(order), bs):
                idx = order[b0 : b0 + bs]
                width = len(windows[idx[0]].ids)
                ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, j in enumerate(idx):
                    n = len(windows[j].ids)
                    ids[r, :n] = torch.tensor(windows[j].ids, dtype=torch.long)
                    mask[r, :n] = 1
                ids, mask = to_device(ids, self.device), to_device(mask, self.device)
                with self._autocast():
                    out = scorer(input_ids=ids, attention_mask=mask, output_hidden_states=want_hidden)
                if token_hidden:
                    h_np = out.hidden_states[-1].float().cpu().numpy()
                    for r, j in enumerate(idx):
                        outs[j] = h_np[r, : len(windows[j].ids)]
                else:
                    logits = out.logits.float()
                    p = torch.sigmoid(logits) if self.schema.multi_label else torch.softmax(logits, dim=-1)
                    p_np = p.cpu().numpy().astype(np.float32, copy=False)
                    for r, j in enumerate(idx):
                        outs[j] = p_np[r, : len(windows[j].ids)] if ner else p_np[r]
                if want_hidden:
                    hidden = out.hidden_states[-1].float()
                    m = mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
                    embs[idx] = pooled.cpu().numpy()
        return outs, embs

    def _scoring_model(self) -> Any:
        """The module :meth:`predict` runs: with bf16 autocast and ``config.bf16_weights`` a bf16 copy of the
        weights (made once per trained state: autocast would cast every fp32 weight again in every batch), else
        ``self.model``. Its frozen lower layers (bf16 weights: its own cache space) are set up as the model's."""
        if self.autocast_dtype != torch.bfloat16 or not self.config.bf16_weights:
            return self.model
        if self._scoring is None:
            self._scoring = bf16_copy(self.model, self.config, self.max_length)
        return self._scoring

    @staticmethod
    def _pool_windows(
        by_text: Sequence[Sequence[int]], windows: Sequence[_Window], values: Any, width: int
    ) -> np.ndarray:
        """Per text, the token-count-weighted mean of its windows' vectors; (n_texts, width) float32."""
        out = np.zeros((len(by_text), width), dtype=np.float32)
        if width == 0:
            return out
        for t, js in enumerate(by_text):
            if len(js) == 1:
                out[t] = values[js[0]]
                continue
            weights = np.array([len(windows[j].ids) for j in js], dtype=np.float64)
            stacked = np.stack([np.asarray(values[j], dtype=np.float64) for j in js])
            out[t] = (weights[:, None] * stacked).sum(axis=0) / weights.sum()
        return out

    @staticmethod
    def _word_probs(
        words: Sequence[tuple[int, int]],
        windows: Sequence[_Window],
        outs: Sequence[np.ndarray],
        n_tags: int,
        fill: float | None = None,
    ) -> np.ndarray:
        """(n_words, n_tags) rows of per-token ``outs`` (probabilities or hidden states): each word from the
        window where its first subword is most central; ``fill`` (default ``1 / n_tags``) for a word no token covers.
        """
        result = np.zeros((len(words), n_tags), dtype=np.float32)
        if not words:
            return result
        best = np.full(len(words), -1, dtype=np.int64)
        starts = [s for s, _ in words]
        for w, probs in zip(windows, outs):
            rng = _content_range(w.offsets)
            if rng is None:
                continue
            lo, hi = _words_in_window(words, starts, w.offsets, rng)
            if lo >= hi:
                continue
            for pos, k in enumerate(token_to_word(w.offsets, list(words[lo:hi]))):
                if k < 0:
                    continue
                centrality = min(pos - rng[0], rng[1] - pos)
                if centrality > best[lo + k]:
                    best[lo + k] = centrality
                    result[lo + k] = probs[pos]
        for i in np.flatnonzero(best < 0):
            ws = words[i][0]
            found = False
            for w, probs in zip(windows, outs):
                for pos, (ts, te) in enumerate(w.offsets):
                    if ts <= ws < te:
                        result[i] = probs[pos]
                        found = True
                        break
                if found:
                    break
            if not found:
                result[i] = 1.0 / n_tags if fill is None else fill
        return result

    # ------------------------------------------------------------------ training / evaluation

    def _labelled(self, examples: Sequence[Example]) -> list[Example]:
        return labelled_examples(self.schema, examples)

    def _features(self, examples: Sequence[Example]) -> list[Feature]:
        """Training windows for labelled examples (every window of a long text, each with its labels)."""
        windows = self._windows([ex.text for ex in examples])
        label2id = self.schema.label2id
        feats: list[Feature] = []
        if self.task is not TaskKind.NER:
            for w in windows:
                names = examples[w.text].labels or ()
                if self.schema.multi_label:
                    hot = [0.0] * self.schema.num_outputs
                    for lb in names:
                        hot[label2id[lb]] = 1.0
                    feats.append(Feature(w.ids, hot))
                else:
                    feats.append(Feature(w.ids, label2id[names[0]]))
            return feats
        cache: dict[int, tuple[list[tuple[int, int]], list[int], list[int]]] = {}
        for w in windows:
            if w.text not in cache:
                ex = examples[w.text]
                spans = list(ex.spans or ())
                words = words_of(ex.text, sorted({s.start for s in spans} | {s.end for s in spans}))
                ids = [label2id[t] for t in spans_to_word_tags(words, spans)]
                cache[w.text] = (words, [s for s, _ in words], ids)
            words, starts, ids = cache[w.text]
            rng = _content_range(w.offsets)
            if rng is None:
                continue
            lo, hi = _words_in_window(words, starts, w.offsets, rng)
            labels = first_subword_labels(w.offsets, words[lo:hi], ids[lo:hi], IGNORE_INDEX)
            if any(lab != IGNORE_INDEX for lab in labels):
                feats.append(Feature(w.ids, labels))
        return feats

    def fit(self, examples: Sequence[Example], *, progress: Callable[[float], None] | None = None) -> TrainReport:
        """Fine-tune on the labelled ``examples`` (unlabelled ones are ignored) and keep the best weights.

        By default every labelled example is trained on for the planned schedule (no
        validation split, no early stopping: on small label sets a held-out split plus
        early stopping cost more than it saved); with ``val_fraction > 0`` a seeded
        split (see :func:`split_train_val`) drives early stopping. The input (word)
        embedding matrix is frozen when ``config.freeze_embeddings`` (always with frozen lower layers).
        ``progress(fraction in [0, 1])`` is called after every step.
        Raises EmptyInputError without labelled examples, SchemaError /
        UnknownLabelError / AlignmentError for annotations that do not fit the schema.
        """
        labelled = self._labelled(examples)
        if not labelled:
            raise EmptyInputError("no labelled examples to train on")
        if len(labelled) < len(examples):
            log.info("fit: ignoring %d unlabelled examples", len(examples) - len(labelled))
        train_idx, val_idx = split_train_val(len(labelled), self.config)
        train = [labelled[i] for i in train_idx]
        val = [labelled[i] for i in val_idx]
        features = self._features(train)
        if not features:
            raise EmptyInputError("no trainable tokens in the labelled examples (all texts empty?)")
        kind: LossKind = "token" if self.task is TaskKind.NER else ("multi" if self.schema.multi_label else "single")
        if self._fresh_head and isinstance(self.model, MeanPooledClassifier | NormalisedTokenClassifier):
            self._probe_head(train)
        embedding = self.model.get_input_embeddings()
        if embedding is not None:
            frozen = isinstance(self.model, MeanPooledClassifier | NormalisedTokenClassifier) and bool(
                self.model.frozen_layers
            )  # the cached frozen part starts at the embeddings
            embedding.weight.requires_grad_(not (self.config.freeze_embeddings or frozen))

        def validate() -> float:
            self._scoring = None  # the weights changed since the last copy
            return float(self._score(val))

        self._scoring = None
        report = train_loop(
            self.model,
            features,
            config=self.config,
            kind=kind,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
            pad_id=self.pad_id,
            fresh_head=self._fresh_head,
            schedule=self.config.warm_schedule if self.warm_started else 1.0,
            n_train=len(train),
            n_val=len(val),
            validate=validate if val else None,
            progress=progress,
        )
        self._fresh_head = False
        self._scoring = None  # the weights changed
        return report

    def _probe_head(self, train: Sequence[Example]) -> None:
        """LP-FT start of a fresh mean-pooled head: the logistic regression (``head_c``) of the frozen encoder's
        normalised sentence vectors of ``train``, as the head learner fits it (see :mod:`al_loop.models.linear`)."""
        assert isinstance(self.model, MeanPooledClassifier | NormalisedTokenClassifier)
        mapping = self.head_mapping if self.head_mapping is not None and self.head_mapping.carried else None
        if mapping is not None and not mapping.new:
            return  # every row is the source model's
        texts = [ex.text for ex in train]
        c, seed = self.config.head_c, self.config.seed
        if self.task is TaskKind.NER:
            label2id = self.schema.label2id
            rows = self.word_vectors(texts)
            y = np.asarray(
                [label2id[t] for ex in train for t in spans_to_word_tags(words_of(ex.text), list(ex.spans or ()))],
                dtype=np.int64,
            )
            x = normalise(np.concatenate(rows)) if rows else np.zeros((0, self.model.classifier.in_features))
            coef, intercept = fit_softmax(x, y, self.schema.num_outputs, c, seed)
        else:
            x = normalise(self.sentence_vectors(texts))
            coef, intercept, _ = fit_label_head(x, train, self.schema, c, seed)
        if mapping is not None:  # the source's rows stay; the new labels' rows start from the regression
            coef, intercept = carried_rows(self.model.classifier, self.schema, mapping, coef, intercept)
        self.model.set_head(coef, intercept)

    def _score(self, labelled: Sequence[Example]) -> float:
        return float(self._metrics(labelled)["score"])

    def _metrics(self, labelled: Sequence[Example]) -> dict[str, Any]:
        out = self.predict([ex.text for ex in labelled], embeddings=False)
        return prediction_metrics(self.schema, labelled, out.predicted)

    def evaluate(self, examples: Sequence[Example]) -> dict[str, Any]:
        """Metrics of :mod:`al_loop.training.metrics` on the labelled ``examples`` (main number: ``"score"``).

        Raises EmptyInputError when none is labelled.
        """
        labelled = self._labelled(examples)
        if not labelled:
            raise EmptyInputError("no labelled examples to evaluate")
        return self._metrics(labelled)


def stored_training_config(manifest: dict[str, Any], artifact_dir: str | Path) -> TrainingConfig:
    """The training config saved in an artifact's manifest (unknown keys dropped; defaults when unusable)."""
    stored = manifest.get("training_config") or {}
    known = set(TrainingConfig.__dataclass_fields__)
    try:
        return TrainingConfig(**{k: v for k, v in stored.items() if k in known})
    except (ConfigError, TypeError) as exc:
        log.warning("artifact %s: stored training config unusable (%s); using defaults", artifact_dir, exc)
        return TrainingConfig()


def bf16_copy(model: Any, config: TrainingConfig, max_length: int) -> Any:
    """An inference copy of ``model`` whose linear layers hold bfloat16 weights, the ones bf16 autocast multiplies
    with (it casts them again in every batch); embeddings and LayerNorm stay float32 as autocast keeps them, so the
    copy computes what autocast computes. al-loop's heads keep the same frozen lower layers."""
    import copy

    if isinstance(model, MeanPooledClassifier | NormalisedTokenClassifier):
        k = model.frozen_layers
        bottom, model._bottom = model._bottom, None
        try:
            dup = copy.deepcopy(model)
        finally:
            model._bottom = bottom
        if k:
            dup.freeze_lower(k, config.frozen_cache_mb, extra=f"max_length={max_length}")
    else:
        dup = copy.deepcopy(model)
    for module in dup.modules():  # what autocast computes in bf16; embeddings and LayerNorm stay float32
        if isinstance(module, torch.nn.Linear):
            module.to(torch.bfloat16)
    dup.eval()
    for p in dup.parameters():
        p.requires_grad_(False)
    return dup


def decode_label_probs(schema: LabelSchema, probs: np.ndarray) -> list[tuple[str, ...]]:
    """Label names from classification probabilities (n, k): argmax, or the multi-label threshold rule."""
    tags = schema.tags
    if not schema.multi_label:
        return [(tags[int(k)],) for k in probs.argmax(axis=1)] if len(probs) else []
    out: list[tuple[str, ...]] = []
    for row in probs:
        chosen = [tags[k] for k in np.flatnonzero(row >= MULTI_LABEL_THRESHOLD)]
        out.append(tuple(chosen) if chosen else (tags[int(row.argmax())],))
    return out


def labelled_examples(schema: LabelSchema, examples: Sequence[Example]) -> list[Example]:
    """The labelled ``examples`` checked against the schema; NER spans validated and trimmed (check_spans)."""
    out: list[Example] = []
    ner = schema.task is TaskKind.NER
    for ex in examples:
        if not ex.is_labelled:
            continue
        if ner and ex.spans is None:
            raise SchemaError(f"item {ex.item_id}: NER model needs spans, got class labels")
        if not ner and ex.labels is None:
            raise SchemaError(f"item {ex.item_id}: classification model needs labels, got spans")
        schema.check_example(ex)
        if ner:
            spans = check_spans(ex.text, ex.spans or (), schema)
            if spans != ex.spans:
                ex = Example(ex.item_id, ex.text, spans=spans, labels=None, meta=ex.meta)
        out.append(ex)
    return out


def prediction_metrics(schema: LabelSchema, labelled: Sequence[Example], predicted: Sequence[Any]) -> dict[str, Any]:
    """Metrics of :mod:`al_loop.training.metrics` for ``predicted`` (labels or spans, one per example)."""
    if schema.task is TaskKind.NER:
        return ner_metrics([ex.text for ex in labelled], [ex.spans or () for ex in labelled], predicted)
    return classification_metrics(
        [ex.labels or () for ex in labelled], predicted, schema.labels, multi_label=schema.multi_label
    )


def _load_hf(source: str, schema: LabelSchema, *, from_artifact: bool, probe_head: bool = False) -> tuple[Any, Any]:
    """Load model + fast tokenizer from a local folder, offline.

    From a base model the head is sized and named by ``schema`` (new head; with
    ``probe_head`` al-loop's :class:`MeanPooledClassifier` / :class:`NormalisedTokenClassifier`);
    from an artifact (one of those when it has the head file) the stored
    ``id2label`` must equal ``schema.tags``.
    """
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    pooled = has_pooled_head(source) if from_artifact else probe_head
    auto: Any = AutoModelForTokenClassification if schema.task is TaskKind.NER else AutoModelForSequenceClassification
    if pooled:
        auto = AutoModel
    # weights only from safetensors, never from a pickle (pytorch_model.bin), user-given paths included
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
    if not from_artifact and not pooled:
        kwargs.update(
            num_labels=schema.num_outputs,
            id2label=schema.id2label,
            label2id=schema.label2id,
            ignore_mismatched_sizes=True,
        )
        if schema.task is TaskKind.CLASSIFICATION:
            kwargs["problem_type"] = (
                "multi_label_classification" if schema.multi_label else "single_label_classification"
            )
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = auto.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"cannot load model from {source}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"model {source} has no fast tokenizer; character offsets are required")
    if pooled:
        model = _pooled(model, source, schema, from_artifact=from_artifact)
    id2label: dict[Any, Any] = dict(model.config.id2label or {})
    stored = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(len(id2label))]
    if stored != list(schema.tags):
        raise SchemaError(f"model {source} predicts {stored}, but the label schema has {list(schema.tags)}")
    return model, tokenizer


def _pooled(
    body: Any, source: str, schema: LabelSchema, *, from_artifact: bool
) -> MeanPooledClassifier | NormalisedTokenClassifier:
    """Wrap an encoder in al-loop's linear head named by ``schema`` (its weights loaded from an artifact)."""
    if not from_artifact:
        body.config.id2label = dict(schema.id2label)
        body.config.label2id = dict(schema.label2id)
        if schema.task is TaskKind.CLASSIFICATION:
            body.config.problem_type = (
                "multi_label_classification" if schema.multi_label else "single_label_classification"
            )
    wrapper = NormalisedTokenClassifier if schema.task is TaskKind.NER else MeanPooledClassifier
    model = wrapper(body, schema.num_outputs)
    if from_artifact:
        from safetensors import SafetensorError

        try:
            model.load_head(source)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
            raise ModelLoadError(f"cannot load the classifier head from {source}: {exc}") from exc
    return model
