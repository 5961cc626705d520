"""al-loop's own heads as a transformers custom-code folder: the pieces :mod:`al_loop.rounds.export` assembles.

- ``modeling_al_loop.py`` (:data:`CODE_TEMPLATE`, in ``export_code/``), copied verbatim, and ``config.json``'s
  ``architectures`` / ``auto_map`` naming its class (:func:`custom_config`); the folder loads with
  ``pipeline(task, model=DIR, trust_remote_code=True)`` (:data:`REMOTE_CODE_REASON` says why it must).
- One ``model.safetensors``: the encoder's tensors as ``body.*`` (:func:`encoder_tensors`: a bare encoder's, or the
  ones under a checkpoint's base-model prefix) and the head's as ``classifier.weight`` / ``classifier.bias``
  (:func:`head_tensors`), merged byte by byte (:class:`MergedSafetensors`). The safetensors format: a u64
  little-endian header length, a JSON header of name -> dtype, shape, data_offsets (relative to the data), then
  the raw data; merging renames keys, shifts offsets and copies data ranges in chunks, never loading a tensor.
- The encoder folder's tokenizer files (:func:`tokenizer_files`); a head-learner version's encoder is its base
  model (:func:`head_encoder`).

Torch-free (the web process streams downloads); every failure is a NotExportableError naming the version.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from al_loop.errors import ConfigError, ModelLoadError, NotExportableError
from al_loop.model_paths import parse_source_ref, resolve_model_path
from al_loop.store.repository import Store
from al_loop.store.sources import resolve_base_model
from al_loop.types import TaskKind

__all__ = [
    "AUTO_CLASSES",
    "CODE_FILE",
    "CODE_TEMPLATE",
    "CUSTOM_CLASSES",
    "ENCODER_PREFIX",
    "REMOTE_CODE_REASON",
    "MergedSafetensors",
    "TensorRange",
    "custom_config",
    "encoder_tensors",
    "head_encoder",
    "head_tensors",
    "read_header",
    "tokenizer_files",
]

CODE_FILE = "modeling_al_loop.py"
CODE_TEMPLATE = Path(__file__).with_name("export_code") / CODE_FILE
"""The file copied verbatim into exports (never imported by al-loop: it needs torch and transformers)."""
ENCODER_PREFIX = "body"
"""The custom classes' encoder attribute (``base_model_prefix``): the merged file's encoder tensors are ``body.*``."""
CUSTOM_CLASSES = {TaskKind.CLASSIFICATION: "AlLoopMeanPooledClassifier",
                  TaskKind.NER: "AlLoopNormalisedTokenClassifier"}
AUTO_CLASSES = {TaskKind.CLASSIFICATION: "AutoModelForSequenceClassification",
                 TaskKind.NER: "AutoModelForTokenClassification"}
TOKENIZER_FILES = frozenset({"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                              "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                              "tokenizer.model"})
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_FLOATS = ("F32", "F16", "BF16")
_MAX_HEADER_BYTES = 64 * 2**20
_CHUNK = 2**20
REMOTE_CODE_REASON = ("no stock transformers head L2-normalises the hidden states before its classifier, so stock "
                      "classes cannot reproduce these predictions; the folder ships the few lines that do "
                      f"({CODE_FILE}), which transformers runs only with trust_remote_code=True")


@dataclass(frozen=True)
class TensorRange:
    """One tensor of a merged safetensors file: its new ``name``, ``dtype`` / ``shape`` as stored, and its raw
    bytes ``source[start : start + length]`` (absolute file offsets)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    source: Path
    start: int
    length: int


@dataclass(frozen=True)
class MergedSafetensors:
    """A safetensors file made of tensors of other safetensors files, without loading them: ``header`` (its
    8-byte little-endian length, then the JSON of name -> dtype, shape, data offsets, padded to 8 bytes) and the
    tensors' raw bytes in order, copied in chunks."""

    header: bytes
    tensors: tuple[TensorRange, ...]

    @classmethod
    def build(cls, tensors: list[TensorRange]) -> MergedSafetensors:
        entries: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in tensors:
            entries[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.length]}
            offset += t.length
        text = json.dumps(entries, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)
        return cls(struct.pack("<Q", len(text)) + text, tuple(tensors))

    @property
    def size(self) -> int:
        return len(self.header) + sum(t.length for t in self.tensors)

    def chunks(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        yield self.header
        for t in self.tensors:
            with open(t.source, "rb") as src:
                src.seek(t.start)
                left = t.length
                while left > 0:
                    block = src.read(min(chunk_size, left))
                    if not block:
                        raise OSError(f"{t.source} ended before tensor {t.name}'s data (changed while exporting?)")
                    left -= len(block)
                    yield block


def read_header(path: Path, what: str) -> tuple[dict[str, Any], int]:
    """A safetensors file's tensors (name -> dtype, shape, data_offsets; no ``__metadata__``) and where its data
    starts: the file starts with the header's length (u64, little-endian) and that JSON header."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > _MAX_HEADER_BYTES or n > size - 8:
                raise ValueError("bad header length")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        header.pop("__metadata__", None)
        for info in header.values():
            s, e = info["data_offsets"]
            shape = [int(d) for d in info["shape"]]
            if not (isinstance(s, int) and isinstance(e, int) and 0 <= s <= e <= size - 8 - n):
                raise ValueError("bad data offsets")
            width = _DTYPE_BYTES.get(info["dtype"])
            if width is not None and math.prod(shape) * width != e - s:
                raise ValueError("data size does not match the shape")
    except (OSError, ValueError, TypeError, KeyError, struct.error):
        raise NotExportableError(f"{what}: {path.name} is not a readable safetensors file") from None
    return header, 8 + n


def _tensor(name: str, info: dict[str, Any], path: Path, base: int) -> TensorRange:
    s, e = info["data_offsets"]
    return TensorRange(name, str(info["dtype"]), tuple(int(d) for d in info["shape"]), path, base + s, e - s)


def encoder_tensors(folder: Path, what: str, skip: tuple[str, ...] = ()) -> list[TensorRange]:
    """The encoder's tensors in ``folder``'s safetensors files (but ``skip``: al-loop's head files), renamed to
    ``body.<name>``: a bare encoder's (``embeddings.*``, as ``AutoModel`` saves it) or, from a checkpoint with a
    head, the ones under its base-model prefix (``bert.embeddings.*`` ...: the ``bert.`` part replaced)."""
    files = sorted(p for p in folder.glob("*.safetensors")
                   if p.is_file() and p.name not in skip)
    if not files:
        raise NotExportableError(f"{what}: no safetensors weights for its encoder in {folder}")
    found: dict[str, TensorRange] = {}
    for path in files:
        header, base = read_header(path, what)
        for name, info in header.items():
            found[name] = _tensor(name, info, path, base)
    if any(name.startswith("embeddings.") for name in found):
        prefix = ""
    else:
        prefixes = {name.split(".", 1)[0] for name in found if name.split(".")[1:2] == ["embeddings"]}
        if len(prefixes) != 1:
            raise NotExportableError(f"{what}: cannot tell the encoder's weights in {folder} (no single "
                                     "embeddings.* or <prefix>.embeddings.* group of tensors)")
        prefix = prefixes.pop() + "."
    return [TensorRange(f"{ENCODER_PREFIX}.{name[len(prefix):]}", t.dtype, t.shape, t.source, t.start, t.length)
            for name, t in sorted(found.items()) if name.startswith(prefix)]


def head_tensors(path: Path, names: tuple[str, str], k: int, d: int, what: str) -> list[TensorRange]:
    """The head's weight (k, d) and bias (k,) in ``path`` as ``classifier.weight`` / ``classifier.bias``."""
    if not path.is_file():
        raise NotExportableError(f"{what}: its artifact has no {path.name}")
    header, base = read_header(path, what)
    weight, bias = header.get(names[0]), header.get(names[1])
    if (weight is None or bias is None or list(weight["shape"]) != [k, d] or list(bias["shape"]) != [k]
            or weight["dtype"] not in _FLOATS or bias["dtype"] not in _FLOATS):
        raise NotExportableError(f"{what}: {path.name} does not hold a ({k}, {d}) head for its {k} outputs over "
                                 f"its encoder's {d}-wide states")
    return [_tensor("classifier.weight", weight, path, base), _tensor("classifier.bias", bias, path, base)]


def custom_config(config: dict[str, Any], task: TaskKind) -> dict[str, Any]:
    """``config`` (the encoder's, with the labels) for al-loop's head as custom code: the custom class in
    ``architectures`` and ``auto_map`` (the pipeline's auto class -> ``modeling_al_loop.py``)."""
    out = dict(config)
    name = CUSTOM_CLASSES[task]
    out["architectures"] = [name]
    out["auto_map"] = {AUTO_CLASSES[task]: f"{CODE_FILE.removesuffix('.py')}.{name}"}
    return out


def tokenizer_files(folder: Path, what: str) -> tuple[Path, ...]:
    """The tokenizer files in the encoder's ``folder`` (other files there, e.g. sentence-transformers', are not)."""
    found = tuple(sorted(p for p in folder.iterdir()
                         if p.name in TOKENIZER_FILES and p.is_file() and not p.is_symlink()))
    if not any(p.name in ("tokenizer.json", "tokenizer_config.json") for p in found):
        raise NotExportableError(f"{what}: no tokenizer files (tokenizer.json / tokenizer_config.json) in {folder}")
    return found


def head_encoder(store: Store, manifest: dict[str, Any], what: str) -> Path:
    """The folder of a head-learner version's encoder: the base model its manifest names (as ``HeadModel.load``
    finds it). NotExportableError when it is not on disk any more."""
    base = manifest.get("base_model")
    if not isinstance(base, str) or not base:
        raise NotExportableError(f"{what}: a head-learner artifact whose manifest names no base model")
    try:
        name = resolve_base_model(store, base) if parse_source_ref(base) is not None else base
        folder = Path(resolve_model_path(name))
    except (ModelLoadError, ConfigError) as exc:
        raise NotExportableError(
            f"{what} was trained by the head learner: its weights are a logistic regression over the frozen "
            f"features of its base model {base[:300]!r}, and the export needs that encoder's weights, which are no "
            f"longer available ({exc})") from None
    if not (folder / "config.json").is_file():
        raise NotExportableError(f"{what}: its base model folder {folder} has no config.json")
    return folder
