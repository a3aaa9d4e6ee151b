"""``Archive.status()`` and ``runarchive status``: the unflushed backlog per run,
read-only, also beside a live writer process that holds the cache lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runarchive import Archive, CacheError
from runarchive.cli.main import main

WRITER = textwrap.dedent(
    """
    import sys
    from runarchive import Archive
    archive = Archive.open(sys.argv[1], cache_dir=sys.argv[2], flush_age=3600)
    run = archive.start_run(agent="live", run_id="live-run")
    for i in range(7):
        run.checkpoint("step", {"i": i, "pad": "x" * 100})
    print("READY", flush=True)
    sys.stdin.readline()  # hold the cache (and its lock) until told to go
    archive.close()
    print("DONE", flush=True)
    """
)


def test_status_shows_the_backlog_and_clears_after_a_flush(tmp_path: Path) -> None:
    with Archive.open((tmp_path / "b").as_uri(), cache_dir=tmp_path / "c", flush_age=3600) as a:
        run = a.start_run(agent="a", run_id="r1")
        for i in range(5):
            run.checkpoint("s", {"i": i})
        run.event("e", {"x": 1})
        status = a.status()
        (row,) = status.runs
        assert (row.run_id, row.status, row.last_seq, row.archived_seq) == ("r1", "running", 6, 0)
        assert row.unflushed_records == 6
        assert row.unflushed_bytes == a.cache.unflushed_bytes() > 0
        assert row.oldest_unflushed_age is not None
        assert row.oldest_unflushed_age >= 0
        assert row.last_flush_error is None
        assert status.unflushed_records == 6
        assert status.max_unflushed_bytes == 1024**3
        run.flush()
        after = a.status()
        assert after.unflushed_records == 0
        assert after.unflushed_bytes == 0
        assert after.runs[0].archived_seq == 6
        assert after.runs[0].oldest_unflushed_age is None
        doc = after.as_dict()
        assert doc["totals"]["unflushed_bytes"] == 0
        json.dumps(doc)


@pytest.mark.slow
def test_cli_status_beside_a_live_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, cache = (tmp_path / "b").as_uri(), tmp_path / "c"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(cache)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "READY"
        # In another process, while the writer holds the cache lock:
        proc = subprocess.run(
            [sys.executable, "-m", "runarchive.cli", "status", "--cache-dir", str(cache), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["archive_url"] == url
        assert doc["totals"]["unflushed_records"] == 7
        (row,) = doc["runs"]
        assert row["run_id"] == "live-run"
        assert row["unflushed_records"] == 7
        assert row["archived_seq"] == 0
        # the text form, in this process
        assert main(["status", "--cache-dir", str(cache)]) == 0
        out = capsys.readouterr().out
        assert "unflushed 7 records" in out
        assert "live-run" in out
        # the writer was not disturbed: it still holds the lock and flushes at close
        with pytest.raises(CacheError, match="in use by another process"):
            Archive.open(url, cache_dir=cache)
        writer.stdin.write("go\n")  # type: ignore[union-attr]
        writer.stdin.flush()  # type: ignore[union-attr]
        assert writer.stdout.readline().strip() == "DONE"
    finally:
        writer.kill()
        writer.wait()
    assert main(["status", "--cache-dir", str(cache), "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["totals"]["unflushed_records"] == 0
    assert done["runs"][0]["status"] == "running"


def test_cli_status_without_a_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--cache-dir", str(tmp_path / "nothing")]) == 2
    assert "no runarchive cache" in capsys.readouterr().err
