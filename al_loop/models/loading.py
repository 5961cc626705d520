"""Find base models offline, pick the device and the compute precision.

Nothing here downloads: a model is the packaged MiniLM (``"default"``), a local
folder, or a Hugging Face name already in the local cache.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import lru_cache

import torch

from al_loop.errors import ConfigError
from al_loop.model_paths import resolve_model_path  # torch-free; re-exported here

log = logging.getLogger(__name__)

__all__ = [
    "cpu_supports_bf16",
    "pick_device",
    "pick_precision",
    "precision_name",
    "quiet_transformers",
    "resolve_model_path",
    "to_device",
]


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the CPU) on ``device``: on CUDA through pinned (page-locked) host memory with a
    non-blocking copy, so the transfer is a DMA that overlaps the host's work on the next batch; as is
    (``tensor.to(device)``) elsewhere. The copy is ordered on the current CUDA stream before any kernel that
    reads it, and the pinned buffer is kept alive by torch's host allocator until the copy is done."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def pick_device(pref: str = "auto") -> torch.device:
    """``"auto"``: the current CUDA device when one is present, else the CPU.

    ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` are taken as given; ConfigError when
    CUDA is asked for but absent, or for any other value.
    """
    pref = (pref or "auto").strip().lower()
    if pref == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {pref!r} requested but no CUDA device is available")
        try:
            dev = torch.device(pref)
        except RuntimeError as exc:
            raise ConfigError(f"invalid device {pref!r}") from exc
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {pref!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return dev
    raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {pref!r}")


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512_BF16 or AMX).

    Checks ``torch.backends.cpu.get_cpu_capability()`` and, on Linux, the
    ``/proc/cpuinfo`` flags ``avx512_bf16`` / ``amx_bf16``.
    """
    try:
        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    except (AttributeError, RuntimeError):
        cap = ""
    if "AVX512_BF16" in cap or "AMX" in cap:
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[-1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def pick_precision(pref: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype to use, or None for plain fp32.

    ``"fp32"`` -> None; ``"bf16"`` -> bfloat16 (even when slow on this hardware);
    ``"auto"`` -> bfloat16 on CUDA devices that support it (compute capability 8.0+)
    and on CPUs with native bf16 (:func:`cpu_supports_bf16`), None otherwise. Weights
    stay fp32; only matmuls run in bf16 under ``torch.autocast``, in training and in
    scoring alike. There is deliberately no fp16: bf16 has fp32's exponent range, so
    training needs no loss scaling (no GradScaler); a GPU without bf16 trains in fp32.
    """
    if pref == "fp32":
        return None
    if pref == "bf16":
        return torch.bfloat16
    if pref != "auto":
        raise ConfigError(f"precision must be auto, fp32 or bf16, got {pref!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else None
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """``"bf16"`` or ``"fp32"`` for the value :func:`pick_precision` returns."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars for the duration, then restore them."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()
