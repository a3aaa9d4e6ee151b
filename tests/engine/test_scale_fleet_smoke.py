"""A tiny run of ``bench/scale_fleet.py`` (the fleet benchmark itself is not a test)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import scale_fleet


def test_the_fleet_simulation_runs_and_its_invariants_hold() -> None:
    fin = scale_fleet.finish_scaling(50, 5_000, samples=20)
    assert fin["requests_ratio"] == 1.0  # 2 PUTs per finish, whatever the archive
    assert fin["bytes_ratio"] <= 1.05
    fleet = scale_fleet.simulate_fleet(hosts=20, archive_runs=2_000, hours=0.05)
    assert fleet["renewals"] > 0
    assert fleet["finishes"] > 0
    assert fleet["conflicts_per_1000_renewals"] == 0
    assert fleet["interrupted_end"]["requests"] == {"list": 2}
    assert fleet["month"]["total_usd"] > 0
    assert "412s on live objects" in scale_fleet.report({"finish": fin, "fleet": fleet})
