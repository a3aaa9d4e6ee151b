"""The flusher's retry back-off: exponential with "equal jitter", from an injectable
random source (docs/design.md, "Faults and backpressure")."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace
from typing import Any

import pytest

from runarchive.engine import flusher as flusher_module
from runarchive.engine.flusher import BACKOFF_MAX, Flusher, backoff
from runarchive.policy import Policy

NOW = 1000.0


@pytest.fixture(autouse=True)
def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flusher's monotonic clock stands still: delays are exact, whatever the load."""
    clock = SimpleNamespace(monotonic=lambda: NOW, time=time.time)
    monkeypatch.setattr(flusher_module, "time", clock)


def test_backoff_waits_between_half_and_all_of_a_doubling_ceiling() -> None:
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    for failures, ceiling in enumerate(ceilings, start=1):
        assert backoff(failures, lambda: 0.0) == pytest.approx(ceiling / 2)
        assert backoff(failures, lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)
        assert ceiling / 2 <= backoff(failures, random.Random(failures).random) < ceiling


def test_backoff_after_a_very_long_outage_stays_capped() -> None:
    # 0.5 * 2 ** 5000 overflows a float: the thread must not die after hours of failures.
    assert backoff(5000, lambda: 0.5) == pytest.approx(0.75 * BACKOFF_MAX)
    assert backoff(0, lambda: 0.0) == pytest.approx(0.25)  # never a zero or negative wait


class _FailingEngine:
    """The parts of a FlushEngine the flusher's retry path touches; every flush fails."""

    def __init__(self) -> None:
        self.cache = SimpleNamespace(note_flush_error=lambda *args: None)

    def policy(self, run_id: str) -> Policy:
        return Policy()

    def flush_run(self, run_id: str) -> int:
        raise ConnectionError("the bucket is down")


def _delays(flusher: Flusher, failures: int) -> list[float]:
    """The retry delay the flusher chose after each of ``failures`` failed flushes."""
    out = []
    for _ in range(failures):
        flusher._flush("r1")
        out.append(flusher._pending["r1"].retry_at - NOW)
    return out


def _flusher(uniform: Any = None) -> Flusher:
    return Flusher(_FailingEngine(), SimpleNamespace(), uniform=uniform)  # type: ignore[arg-type]


def test_a_failed_flush_retries_after_the_jittered_back_off() -> None:
    lowest = _delays(_flusher(lambda: 0.0), 7)
    assert lowest == pytest.approx([0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0])
    flusher = _flusher(lambda: 0.999)
    highest = _delays(flusher, 7)
    assert highest == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0], rel=0.001)
    assert isinstance(flusher.errors["r1"].error, ConnectionError)


def test_two_flushers_failing_together_do_not_retry_in_lockstep() -> None:
    # Two hosts whose flushes fail at the same instants (one outage): with jitter their
    # retries are spread; without it (the old fixed delays) they would coincide.
    a = _delays(_flusher(random.Random(1).random), 8)
    b = _delays(_flusher(random.Random(2).random), 8)
    assert all(abs(x - y) > 0.001 for x, y in zip(a, b, strict=True))
    # The default source is a generator per flusher seeded by the OS, not a shared seed.
    c, d = _delays(_flusher(), 4), _delays(_flusher(), 4)
    assert any(abs(x - y) > 0.001 for x, y in zip(c, d, strict=True))
