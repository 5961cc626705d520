"""The ingest drain's batching, on a simulated clock (the real Redis list: tests/bridge/test_faults.py).

``drain`` only calls ``claim``, ``peek``, ``trim``, ``depth``, ``release`` and ``handover`` on its queue,
so a stream of events arriving at a fixed rate on a fake clock stands in for Redis here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from annotator_bridge.worker import ingest_queue
from annotator_bridge.worker.ingest_queue import GATHER, LINGER, drain


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class Stream:
    """``total`` events for project 1, event ``i`` arriving at ``i / rate`` seconds."""

    def __init__(self, clock: FakeClock, rate: float, total: int) -> None:
        self.clock, self.rate, self.total = clock, rate, total
        self.taken = 0
        self.held = True

    def arrived(self) -> int:
        return min(self.total, int(self.clock.now * self.rate) + 1)

    def claim(self, token: str) -> bool:
        return self.held

    def depth(self) -> int:
        return self.arrived() - self.taken

    def peek(self, n: int) -> list[str]:
        end = min(self.arrived(), self.taken + n)
        return [json.dumps([1, {"n": i}]) for i in range(self.taken, end)]

    def trim(self, token: str, n: int) -> bool:
        self.taken += n
        return True

    def release(self, token: str) -> int:
        waiting = self.depth()
        if waiting == 0:
            self.held = False
        return waiting

    def handover(self, token: str) -> str | None:
        return None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(ingest_queue, "time", fake)
    return fake


def run(clock: FakeClock, gather: float, rate: float = 200.0, total: int = 2000) -> tuple[list[int], list[float]]:
    stream = Stream(clock, rate, total)
    batches: list[int] = []
    delays: list[float] = []
    order: list[int] = []

    def handle(project_id: int, payloads: Sequence[Mapping[str, Any]]) -> None:
        batches.append(len(payloads))
        for p in payloads:
            order.append(p["n"])
            delays.append(clock.now - p["n"] / rate)

    assert drain(stream, handle, "t", gather=gather) == total  # type: ignore[arg-type]
    assert order == list(range(total)) and not stream.held
    assert clock.now <= (total - 1) / rate + gather + LINGER + 0.2  # the lock goes soon after the last event
    return batches, delays


def test_a_steady_stream_is_applied_in_gathered_batches(clock: FakeClock) -> None:
    batches, delays = run(clock, GATHER)
    assert GATHER >= 0.05
    assert len(batches) <= 2000 / (200 * GATHER) * 1.1  # about rate x GATHER events per batch, not a few
    assert max(delays) <= GATHER + 0.05 + 1e-9  # no event waits much longer than GATHER


def test_without_gathering_the_batches_are_what_arrived_between_polls(clock: FakeClock) -> None:
    batches, delays = run(clock, 0.0)
    assert len(batches) > 2000 / (200 * GATHER) * 1.5
    assert max(delays) <= 0.05 + 1e-9
