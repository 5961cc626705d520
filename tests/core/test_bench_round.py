"""The fast-round benchmark's pure helpers (overlap, agreement, split, medians, ratios, cpuinfo), no model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_round", REPO / "benchmarks" / "bench_round.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overlap_counts_shared_ids_over_k(bench) -> None:  # type: ignore[no-untyped-def]
    assert bench.overlap(["a", "b", "c", "d"], ["d", "c", "x", "y"], 4) == 0.5
    assert bench.overlap([1, 2, 3], [3, 2, 1]) == 1.0  # order does not matter
    assert bench.overlap([1, 2], [3, 4]) == 0.0
    assert bench.overlap([], []) == 1.0


def test_argmax_agreement(bench) -> None:  # type: ignore[no-untyped-def]
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.5, 0.5 - 1e-3]])
    q = np.array([[0.8, 0.2], [0.7, 0.3], [0.1, 0.9], [0.6, 0.4]])
    assert bench.argmax_agreement(p, q) == 0.75
    assert bench.argmax_agreement(np.zeros((0, 3)), np.zeros((0, 3))) == 1.0
    with pytest.raises(ValueError):
        bench.argmax_agreement(p, q[:2])


def test_split_is_seeded_disjoint_and_subsamples_the_pool(bench) -> None:  # type: ignore[no-untyped-def]
    lab, pool = bench.split_indices(100, 10, seed=3)
    assert len(lab) == 10 and len(pool) == 90 and not set(lab) & set(pool)
    assert sorted(set(lab) | set(pool)) == list(range(100))
    lab2, pool2 = bench.split_indices(100, 10, seed=3)
    assert np.array_equal(lab, lab2) and np.array_equal(pool, pool2)
    lab3, small = bench.split_indices(100, 10, seed=3, max_pool=20)
    assert np.array_equal(lab3, lab) and len(small) == 20 and set(small) <= set(pool)
    assert not np.array_equal(bench.split_indices(100, 10, seed=4)[0], lab)
    with pytest.raises(ValueError):
        bench.split_indices(10, 10, seed=0)


def test_median_ratio_and_formatting(bench) -> None:  # type: ignore[no-untyped-def]
    assert bench.median([3.0, 1.0, 2.0]) == 2.0
    assert bench.median([4.0, None, 1.0]) == 2.5
    assert bench.median([]) is None
    assert bench.ratio(3.0, 2.0) == 1.5
    assert bench.ratio(1.0, 0.0) is None and bench.ratio(None, 2.0) is None
    assert bench.fmt_ratio(0.5) == "0.50x" and bench.fmt_ratio(0.001234) == "0.0012x" and bench.fmt_ratio(None) == "-"
    assert bench.fmt_s(0.01234) == "0.012 s" and bench.fmt_s(2.345) == "2.35 s" and bench.fmt_s(123.45) == "123.5 s"
    assert bench.fmt_s(None) == "-"
    assert bench.fmt_pct(0.96) == "96.0%"


def test_timed_runs_repeats_and_returns_last(bench) -> None:  # type: ignore[no-untyped-def]
    calls = iter(range(10))
    times, last = bench.timed(lambda: next(calls), 3)
    assert len(times) == 3 and all(t >= 0 for t in times) and last == 2


def test_parse_cpuinfo(bench) -> None:  # type: ignore[no-untyped-def]
    text = ("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n\n"
            "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    model, flags = bench.parse_cpuinfo(text)
    assert model == "Some CPU @ 2.0GHz"
    assert "avx512_bf16" in flags and "amx_bf16" not in flags and "fpu" in flags
    assert bench.parse_cpuinfo("") == ("", set())


def test_parse_overrides(bench) -> None:  # type: ignore[no-untyped-def]
    assert bench.parse_overrides("") == {}
    assert bench.parse_overrides("freeze_layers=0, bf16_weights=false,pooling=cls") == {
        "freeze_layers": 0, "bf16_weights": False, "pooling": "cls"}
    with pytest.raises(ValueError, match="key=value"):
        bench.parse_overrides("freeze_layers")
