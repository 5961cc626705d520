"""`simulate` with pool-adaptive pretraining: adapted once before the seed round, every repeat starts from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from al_loop.errors import ConfigError
from al_loop.models import adapt as adapt_module
from al_loop.models.adapt import AdaptBudget, AdaptResult
from al_loop.simulate import SimulationSpec, run_simulation, write_outputs
from al_loop.types import TaskKind
from annotator_bridge.cli import main
from tests.core.fakes import FakeModel
from tests.core.test_simulate import _write_trec


class _Factory(FakeModel):
    bases: ClassVar[list[str]] = []

    @classmethod
    def create(cls, schema: Any, base_model: str = "default", config: Any = None, **kwargs: Any) -> Any:
        cls.bases.append(base_model)
        return super().create(schema, base_model, config, **kwargs)


def test_simulation_adapts_once_and_trains_every_round_from_the_adapted_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_adapt(base: str, texts: Any, cache: Any, budget: AdaptBudget, **kw: Any) -> AdaptResult:
        calls.append({"base": base, "texts": list(texts), "cache": Path(cache), "budget": budget, **kw})
        return AdaptResult(folder=Path(cache) / "mlm-x", steps=7, seconds=1.5, texts=len(texts), loss_first=9.0,
                           loss_last=4.0, cached=False)

    monkeypatch.setattr(adapt_module, "adapt_encoder", fake_adapt)
    train = _write_trec(tmp_path / "q.train", 40)
    test = _write_trec(tmp_path / "q.test", 9, offset=1000)
    budget = AdaptBudget(max_steps=7)
    spec = SimulationSpec(train=train, test=test, task=TaskKind.CLASSIFICATION, strategies=("random", "margin"),
                          seed_size=6, batch_size=6, rounds=2, repeats=2, out=tmp_path / "out", adapt=budget)
    _Factory.bases = []
    result = run_simulation(spec, model_factory=_Factory, progress=False)
    assert len(calls) == 1
    assert calls[0]["base"] == "default" and calls[0]["budget"] == budget and len(calls[0]["texts"]) == 40
    assert calls[0]["cache"] == tmp_path / "out" / "adapted"
    folder = str(tmp_path / "out" / "adapted" / "mlm-x")
    assert _Factory.bases and set(_Factory.bases) == {folder}
    assert result.adaptation is not None and result.adaptation["steps"] == 7
    assert result.adaptation["base_model"] == "default" and result.adaptation["budget"]["max_steps"] == 7
    data = json.loads(write_outputs(result, spec.out, spec.task)["json"].read_text())
    assert data["adaptation"]["folder"] == folder and data["adaptation"]["cached"] is False
    assert data["spec"]["adapt"]["max_steps"] == 7


def test_simulation_without_adaptation_records_none(tmp_path: Path) -> None:
    train = _write_trec(tmp_path / "q.train", 20)
    test = _write_trec(tmp_path / "q.test", 6, offset=1000)
    spec = SimulationSpec(train=train, test=test, task=TaskKind.CLASSIFICATION, strategies=("random",),
                          seed_size=5, batch_size=5, rounds=1, repeats=1, out=tmp_path / "out")
    result = run_simulation(spec, model_factory=FakeModel, progress=False)
    assert result.adaptation is None


def test_cli_adapt_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from annotator_bridge.commands import simulate as command

    train = _write_trec(tmp_path / "q.train", 20)
    test = _write_trec(tmp_path / "q.test", 6, offset=1000)
    base = ["simulate", "--train", str(train), "--test", str(test), "--task", "classification",
            "--strategy", "random", "--seed-size", "5", "--batch-size", "5", "--rounds", "1", "--repeats", "1",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert main([*base, "--adapt-steps", "5"]) == 2  # needs --adapt-pool
    seen: list[SimulationSpec] = []

    def fake_run(spec: SimulationSpec, **kw: Any) -> Any:
        seen.append(spec)
        raise ConfigError("stop here")

    monkeypatch.setattr("al_loop.simulate.run_simulation", fake_run)
    assert main([*base, "--adapt-pool", "--adapt-steps", "5", "--adapt-minutes", "2",
                 "--adapt-cache", str(tmp_path / "c")]) == 2
    assert seen[0].adapt == AdaptBudget(max_steps=5, max_seconds=120.0, max_length=128, seed=13)
    assert seen[0].adapt_cache == tmp_path / "c"
    assert command._adapt_budget(command_args(adapt_pool=False)) is None


def command_args(**kw: Any) -> Any:
    import argparse

    return argparse.Namespace(**{"adapt_steps": None, "adapt_minutes": None, **kw})
