"""`runarchive verify / compact / gc / hold / release` as a user runs them (in process)."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import invoke

from runarchive import Archive
from runarchive.cli import exitcodes


def make_archive(tmp_path: Path) -> str:
    url = (tmp_path / "bucket").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "c", flush_records=10) as archive:
        for run_id in ("a", "b"):
            with archive.start_run(agent="cli", run_id=run_id) as run:
                for i in range(60):
                    run.checkpoint(("x", "y")[i % 2], {"i": i})
    return url


def test_verify_compact_gc_round_trip(tmp_path: Path) -> None:
    url = make_archive(tmp_path)
    ok = invoke(["--url", url, "verify", "--all"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "2 runs" in ok.stdout
    assert "0 errors, 0 warnings" in ok.stdout

    dry = invoke(["--url", url, "compact", "--all", "--dry-run", "--json"], tmp_path)
    assert dry.returncode == 0, dry.stderr
    plans = json.loads(dry.stdout)
    assert sorted((p["run_id"], p["done"], p["objects_written"]) for p in plans) == [
        ("a", False, 1),
        ("b", False, 1),
    ]
    assert all(p["objects_read"] > 1 for p in plans)

    done = invoke(["compact", "a", "--url", url], tmp_path)  # --url after the command
    assert done.returncode == 0, done.stderr
    assert "compacted" in done.stdout
    assert not (tmp_path / ".runarchive").exists()  # maintenance used a throwaway cache

    kept = invoke(["--url", url, "gc", "--dry-run"], tmp_path)
    assert "0 objects" in kept.stdout  # retired segments are younger than the grace
    gc = invoke(["--url", url, "gc", "--grace", "0", "--json"], tmp_path)
    doc = json.loads(gc.stdout)
    assert doc["objects"]
    assert {o["why"] for o in doc["objects"]} == {"retired"}
    assert invoke(["--url", url, "verify", "a", "b"], tmp_path).returncode == 0


def test_verify_exit_code_and_problem_lines(tmp_path: Path) -> None:
    url = make_archive(tmp_path)
    index = json.loads((tmp_path / "bucket" / "runs" / "b" / "index.json").read_text())
    seg = tmp_path / "bucket" / index["segments"][0]["key"]  # one the index names
    seg.write_bytes(seg.read_bytes()[:-3])  # truncated
    bad = invoke(["--url", url, "verify", "--all", "--json"], tmp_path)
    assert bad.returncode == exitcodes.DAMAGE
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    assert [(p["kind"], p["run_id"], p["key"]) for p in report["problems"]] == [
        ("corrupt", "b", f"runs/b/seg/{seg.name}")
    ]
    text = invoke(["--url", url, "verify", "b"], tmp_path)
    assert text.returncode == exitcodes.DAMAGE
    assert f"ERROR corrupt [b] runs/b/seg/{seg.name}" in text.stdout
    # restore refuses the corrupt segment: damage found too, not "could not check"
    refused = invoke(["--url", url, "restore", "b"], tmp_path)
    assert refused.returncode == exitcodes.DAMAGE
    assert seg.name in refused.stderr


def test_usage_errors_and_hold_on_a_directory(tmp_path: Path) -> None:
    url = make_archive(tmp_path)
    assert invoke(["--url", url, "verify"], tmp_path).returncode == 2
    assert invoke(["--url", url, "verify", "a", "--all"], tmp_path).returncode == 2
    assert invoke(["--url", url, "compact"], tmp_path).returncode == 2
    held = invoke(["--url", url, "hold", "a"], tmp_path)
    assert held.returncode == exitcodes.TROUBLE
    assert "lock" in held.stderr.lower()
