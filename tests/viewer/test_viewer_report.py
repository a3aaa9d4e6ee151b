"""report.html in an export bundle: listed in MANIFEST.sha256, the exported runs with
their timelines, record pages and diffs, agent data escaped."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

from runarchive import Archive, Policy, Reader
from runarchive.compliance.bundle_verify import verify_export

HOSTILE = '</script><script>window.pwned=1</script>"><img src=x onerror="window.pwned=1">'


def embedded(page: str) -> dict:  # type: ignore[type-arg]
    (block,) = re.findall(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    data: dict = json.loads(block)  # type: ignore[type-arg]
    return data


def test_the_bundle_holds_a_report_of_its_runs(
    archive_factory: Callable[..., Archive], tmp_path: Path
) -> None:
    archive = archive_factory(policy=Policy(keep_all=True))
    with archive.start_run(agent="auditor", run_id="run-a") as run:
        run.checkpoint("plan", {"step": 1, "note": HOSTILE})
        run.event("tool_call", {"tool": "search"}, lane="tools")
        run.checkpoint("plan", {"step": 2, "note": HOSTILE})
        run.complete({"answer": 42})
    with archive.start_run(agent="auditor", run_id="run-b") as run:
        run.checkpoint("only", {"x": 1})
    archive.flush()
    dest = tmp_path / "bundle"
    with Reader.open(archive.url) as reader:
        reader.export(["run-a", "run-b"], dest=dest, progress=lambda done, total: None)
    assert verify_export(dest) == []
    page = (dest / "report.html").read_text()
    sums = (dest / "MANIFEST.sha256").read_text()
    assert f"{hashlib.sha256(page.encode()).hexdigest()}  report.html\n" in sums

    assert "onerror" not in page.split('id="data">', 1)[0]
    assert len(re.findall(r"<script\b", page, re.I)) == 2  # HOSTILE made no element
    data = embedded(page)
    assert data["mode"] == "report"
    assert sorted(r["run_id"] for r in data["runs"]["runs"]) == ["run-a", "run-b"]
    run_a = data["run_pages"]["run-a"]
    assert run_a["result"] == {"answer": 42}
    assert run_a["lanes"] == ["checkpoints", "tools"]
    assert [r["label"] for r in run_a["records"]] == ["plan", "tool_call", "plan"]
    assert run_a["verify"]["ok"] is True
    last = data["record_pages"]["run-a"]["3"]
    assert last["previous_seq"] == 1
    assert last["diff"] == [{"op": "changed", "path": "/step"}]
    assert last["record"]["state"]["note"] == HOSTILE


def test_a_run_exported_sealed_is_listed_without_its_records(
    archive_factory: Callable[..., Archive], tmp_path: Path
) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    archive = archive_factory(encryption="local", encryption_keys=f"k1={key}")
    with archive.start_run(agent="sealed", run_id="run-sealed") as run:
        run.checkpoint("plan", {"secret": "s3cr3t"})
    archive.flush()
    dest = tmp_path / "bundle"
    with Reader.open(archive.url) as reader:
        reader.export(["run-sealed"], dest=dest, progress=lambda done, total: None)
    assert verify_export(dest) == []
    page = (dest / "report.html").read_text()
    assert "s3cr3t" not in page
    data = embedded(page)
    (row,) = data["runs"]["runs"]
    assert row["sealed"] is True
    run_page = data["run_pages"]["run-sealed"]
    assert run_page["records"] == []
    assert run_page["sealed"] == ["records (exported sealed)"]
    assert data["record_pages"]["run-sealed"] == {}
