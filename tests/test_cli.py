"""The command line: demo, show, restore; stable --json; exit codes 0/1/2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runarchive import Archive
from runarchive.cli.main import main


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNARCHIVE_")}
    return subprocess.run(
        [sys.executable, "-m", "runarchive.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run the demo once on the embedded default archive; return (dir, its output)."""
    where = tmp_path_factory.mktemp("demo")
    done = run_cli(["demo", "--runs", "3", "--steps", "40"], where)
    assert done.returncode == 0, done.stderr
    return where, done.stdout


def run_ids(output: str) -> list[str]:
    return [
        line.split()[0] for line in output.splitlines() if line[:8].isdigit() and "T" in line[:16]
    ]


def test_demo_reports_runs_records_objects_bytes_and_requests(demo_dir: tuple[Path, str]) -> None:
    where, out = demo_dir
    ids = run_ids(out)
    assert len(ids) == 3
    statuses = [
        line.split()[1] for line in out.splitlines() if line.split()[:1] and line.split()[0] in ids
    ]
    assert statuses == ["completed", "completed", "failed"]
    assert "records appended" in out
    assert "objects in the bucket" in out
    assert "% of the raw JSON" in out
    assert "requests" in out
    assert "manifest  3 runs listed in the archive (0 running)" in out
    assert (where / ".runarchive" / "archive" / "runs").is_dir()


def test_show_and_restore_text_and_json(demo_dir: tuple[Path, str]) -> None:
    where, out = demo_dir
    run_id = run_ids(out)[0]
    shown = run_cli(["show", run_id], where)
    assert shown.returncode == 0, shown.stderr
    assert f"run       {run_id}" in shown.stdout
    assert "status    completed" in shown.stdout

    as_json = json.loads(run_cli(["show", run_id, "--json"], where).stdout)
    assert as_json["run_id"] == run_id
    assert as_json["format"] == 2
    assert {"status", "agent", "segments", "last_seq", "created_at"} <= set(as_json)

    restored = json.loads(run_cli(["restore", run_id, "--json"], where).stdout)
    assert restored["index"]["run_id"] == run_id
    seqs = [r["seq"] for r in restored["records"]]
    assert seqs == sorted(seqs)
    assert {r["type"] for r in restored["records"]} == {"checkpoint", "event"}
    assert sum(1 for r in restored["records"] if r["type"] == "event") == 40

    upto = json.loads(run_cli(["restore", run_id, "--json", "--seq", "10"], where).stdout)
    assert max(r["seq"] for r in upto["records"]) == 10

    text = run_cli(["restore", run_id], where)
    assert "restored" in text.stdout
    assert "checkpoint plan" in text.stdout


def test_failed_run_shows_its_error(demo_dir: tuple[Path, str]) -> None:
    where, out = demo_dir
    failed = run_ids(out)[-1]
    shown = json.loads(run_cli(["show", failed, "--json"], where).stdout)
    assert shown["status"] == "failed"
    assert shown["error"] == "RuntimeError: simulated tool failure"


def test_exit_codes(demo_dir: tuple[Path, str]) -> None:
    where, _ = demo_dir
    missing = run_cli(["show", "no-such-run"], where)
    assert missing.returncode == 1
    assert "runarchive: error: no run 'no-such-run'" in missing.stderr
    bad_id = run_cli(["restore", "../x"], where)
    assert bad_id.returncode == 1
    assert "invalid run_id" in bad_id.stderr
    assert run_cli(["frobnicate"], where).returncode == 2
    assert run_cli(["restore"], where).returncode == 2
    assert run_cli(["restore", "x", "--at", "yesterday"], where).returncode == 2
    assert run_cli(["demo", "--runs", "0"], where).returncode == 2


def test_show_works_beside_a_running_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """show/restore read the bucket only: they need no cache lock."""
    url = (tmp_path / "b").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "c") as archive:  # holds the cache lock
        run = archive.start_run(agent="live")
        run.checkpoint("c", {"x": 1})
        run.flush()
        assert main(["--url", url, "show", run.run_id]) == 0
        assert "status    running" in capsys.readouterr().out
