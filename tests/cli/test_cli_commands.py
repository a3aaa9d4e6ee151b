"""The command line: demo, show, restore; stable --json; exit codes. In process through
``main(argv)``; the entry point itself is smoke-tested as a subprocess."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from support.cli import invoke, run_cli, run_ids

from runarchive import Archive
from runarchive.cli import exitcodes
from runarchive.cli.main import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run the demo once on the embedded default archive; return (dir, its output)."""
    where = tmp_path_factory.mktemp("demo")
    done = invoke(["demo", "--runs", "3", "--steps", "40"], where)
    assert done.returncode == 0, done.stderr
    return where, done.stdout


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
    shown = invoke(["show", run_id], where)
    assert shown.returncode == 0, shown.stderr
    assert f"run       {run_id}" in shown.stdout
    assert "status    completed" in shown.stdout

    as_json = json.loads(invoke(["show", run_id, "--json"], where).stdout)
    assert as_json["run_id"] == run_id
    assert as_json["format"] == 2
    assert {"status", "agent", "segments", "last_seq", "created_at"} <= set(as_json)

    restored = json.loads(invoke(["restore", run_id, "--json"], where).stdout)
    assert restored["index"]["run_id"] == run_id
    seqs = [r["seq"] for r in restored["records"]]
    assert seqs == sorted(seqs)
    assert {r["type"] for r in restored["records"]} == {"checkpoint", "event"}
    assert sum(1 for r in restored["records"] if r["type"] == "event") == 40

    upto = json.loads(invoke(["restore", run_id, "--json", "--seq", "10"], where).stdout)
    assert max(r["seq"] for r in upto["records"]) == 10

    text = invoke(["restore", run_id], where)
    assert "restored" in text.stdout
    assert "checkpoint plan" in text.stdout


def test_failed_run_shows_its_error(demo_dir: tuple[Path, str]) -> None:
    where, out = demo_dir
    failed = run_ids(out)[-1]
    shown = json.loads(invoke(["show", failed, "--json"], where).stdout)
    assert shown["status"] == "failed"
    assert shown["error"] == "RuntimeError: simulated tool failure"


def test_exit_codes_of_errors_and_usage(demo_dir: tuple[Path, str]) -> None:
    where, _ = demo_dir
    missing = invoke(["show", "no-such-run"], where)
    assert missing.returncode == exitcodes.TROUBLE
    assert "runarchive: error: no run 'no-such-run'" in missing.stderr
    bad_id = invoke(["restore", "../x"], where)
    assert bad_id.returncode == exitcodes.TROUBLE
    assert "invalid run_id" in bad_id.stderr
    for usage in (
        ["frobnicate"],
        ["restore"],
        ["restore", "x", "--at", "yesterday"],
        ["demo", "--runs", "0"],
        ["-v", "-q", "runs"],
    ):
        done = invoke(usage, where)
        assert done.returncode == exitcodes.TROUBLE, usage
        assert "usage: runarchive" in done.stderr


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


# -- the entry point, as a user starts it ----------------------------------------------


def test_the_console_script_is_main() -> None:
    (script,) = entry_points(group="console_scripts", name="runarchive")
    assert script.value == "runarchive.cli:main"
    assert script.load() is main


def test_python_m_runarchive_cli_runs_a_command_and_exits_with_its_code(
    demo_dir: tuple[Path, str],
) -> None:
    where, out = demo_dir
    shown = run_cli(["show", run_ids(out)[0], "--json"], where)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "completed"
    missing = run_cli(["show", "no-such-run"], where)
    assert missing.returncode == exitcodes.TROUBLE
    assert missing.stderr.startswith("runarchive: error: no run 'no-such-run'")
    assert "Traceback" not in missing.stderr
