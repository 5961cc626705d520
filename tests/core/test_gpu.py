"""The GPU path (issue 11, item 4): device ``auto`` picks CUDA, bf16 autocast there, pinned non-blocking copies.

The first tests run everywhere: they fake CUDA's presence (``torch.cuda.is_available`` and friends
monkeypatched) and check the choices al-loop makes. The tests marked ``gpu`` fine-tune and predict on a
real CUDA device and are skipped when ``torch.cuda.is_available()`` is False (CI has no GPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from al_loop.config import TrainingConfig
from al_loop.data.schema import LabelSchema
from al_loop.errors import ConfigError
from al_loop.models.loading import pick_device, pick_precision, precision_name, to_device
from al_loop.types import Example, ItemId, TaskKind

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine (torch.cuda.is_available())")


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """torch believes one CUDA device is present (nothing is allocated on it)."""
    state: dict[str, Any] = {"bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: state["bf16"])
    yield state


def test_auto_picks_cuda_when_present(fake_cuda: dict[str, Any]) -> None:
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("") == torch.device("cuda")
    assert pick_device("cuda") == torch.device("cuda")
    assert pick_device("cuda:0") == torch.device("cuda:0")
    assert pick_device("cpu") == torch.device("cpu"), "an explicit cpu wins over a present GPU"
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        pick_device("cuda:1")


def test_auto_picks_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")


def test_cuda_precision_is_bf16_where_supported_else_fp32(fake_cuda: dict[str, Any]) -> None:
    cuda = torch.device("cuda")
    assert pick_precision("auto", cuda) is torch.bfloat16
    assert precision_name(pick_precision("auto", cuda)) == "bf16"
    fake_cuda["bf16"] = False  # e.g. a T4 or V100: fp32, never fp16 (no loss scaling needed anywhere)
    assert pick_precision("auto", cuda) is None
    assert precision_name(None) == "fp32"
    assert pick_precision("fp32", cuda) is None
    assert pick_precision("bf16", cuda) is torch.bfloat16  # asked for explicitly: taken as given
    with pytest.raises(ConfigError):
        pick_precision("fp16", cuda)


class _HostTensor:
    """Records what :func:`to_device` does with a host tensor (no CUDA needed)."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.calls: list[tuple[str, Any]] = []

    def pin_memory(self) -> _HostTensor:
        self.calls.append(("pin_memory", None))
        return self

    def to(self, device: torch.device, non_blocking: bool = False) -> str:
        self.calls.append(("to", (device, non_blocking)))
        return f"on {device}"


def test_to_device_pins_and_copies_without_blocking_on_cuda() -> None:
    t = _HostTensor()
    assert to_device(t, torch.device("cuda")) == "on cuda"  # type: ignore[arg-type]
    assert t.calls == [("pin_memory", None), ("to", (torch.device("cuda"), True))]
    t = _HostTensor()
    to_device(t, torch.device("cpu"))  # type: ignore[arg-type]
    assert t.calls == [("to", (torch.device("cpu"), False))], "no pinning for the CPU"


def test_training_batches_are_pinned_and_copied_without_blocking_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's collate pins its three tensors and copies them non-blocking when the device is CUDA."""
    from al_loop.training.trainer import Feature, _collate

    calls: list[tuple[str, Any]] = []

    def pin_memory(self: torch.Tensor) -> torch.Tensor:
        calls.append(("pin", tuple(self.shape)))
        return self

    real_to = torch.Tensor.to

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        device = args[0] if args else kwargs.get("device")
        if isinstance(device, torch.device) and device.type == "cuda":
            calls.append(("to", kwargs.get("non_blocking", False)))
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    feats = [Feature([101, 7, 102], 1), Feature([101, 102], 0)]
    ids, mask, labels = _collate(feats, 0, "single", torch.device("cuda"))
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert calls == [("pin", (2, 3)), ("pin", (2, 3)), ("pin", (2,)), ("to", True), ("to", True), ("to", True)]
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]] and labels.tolist() == [1, 0]
    calls.clear()
    _collate(feats, 0, "single", torch.device("cpu"))
    assert calls == [], "no pinning on the CPU"


def test_to_device_on_cpu_is_the_tensor_itself() -> None:
    t = torch.arange(6).reshape(2, 3)
    assert to_device(t, torch.device("cpu")) is t


# ---------------------------------------------------------------- on a real GPU (skipped without one)

SCHEMA = LabelSchema.build(TaskKind.CLASSIFICATION, ["sports", "business"])
TRAIN = [
    ("The striker scored twice in the second half.", "sports"),
    ("The home team won the cup final on penalties.", "sports"),
    ("She broke the world record in the 400 metres.", "sports"),
    ("The coach was sacked after five straight defeats.", "sports"),
    ("Shares fell sharply after the profit warning.", "business"),
    ("The bank raised its interest rate by a quarter point.", "business"),
    ("Quarterly revenue beat analysts' forecasts.", "business"),
    ("The merger creates the country's largest retailer.", "business"),
]


@pytest.mark.gpu
@needs_cuda
def test_pinned_copy_lands_on_the_gpu() -> None:
    t = torch.arange(12, dtype=torch.long).reshape(3, 4)
    out = to_device(t, torch.device("cuda"))
    assert out.device.type == "cuda"
    torch.cuda.synchronize()
    assert torch.equal(out.cpu(), t)


@pytest.mark.gpu
@needs_cuda
def test_fine_tune_and_predict_on_cuda_under_autocast() -> None:
    from al_loop.models import TextModel

    config = TrainingConfig(max_length=64, learner="finetune", min_epochs=2, max_epochs=2, target_steps=4,
                            batch_size=4, inference_batch_size=8)
    model = TextModel.create(SCHEMA, config=config)
    assert model.device.type == "cuda", "device auto must pick CUDA"
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert model.precision == expected
    dtypes: list[torch.dtype] = []

    def hook(module: torch.nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(module, torch.nn.Linear) and isinstance(out, torch.Tensor) and out.device.type == "cuda":
            dtypes.append(out.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        report = model.fit([Example(ItemId(f"t{i}"), text, labels=(label,)) for i, (text, label) in enumerate(TRAIN)])
        trained = list(dtypes)
        dtypes.clear()
        out = model.predict([text for text, _ in TRAIN])
    finally:
        handle.remove()
    assert report.steps > 0
    assert trained and dtypes, "no linear layer ran on the GPU"
    want = torch.bfloat16 if expected == "bf16" else torch.float32
    assert want in set(trained), f"training linear layers ran in {set(trained)}, expected autocast {want}"
    assert want in set(dtypes), f"scoring linear layers ran in {set(dtypes)}, expected {want}"
    assert all(p.device.type == "cuda" for p in model.model.parameters())
    assert out.probs.shape == (len(TRAIN), 2) and np.isfinite(out.probs).all()
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-3)
    assert out.embeddings.shape == (len(TRAIN), 384) and np.isfinite(out.embeddings).all()
