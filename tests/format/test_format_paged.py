"""docs/format.md §12 run as written: a paged, live-compacted run read with bash,
``zstd``, ``jq`` and ``sha256sum`` only (the refs recipe of §12.1, the chain check of
§12.3), and the result compared with runarchive's own reader."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from runarchive import Archive, Reader

FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "format.md"
# slow: each test runs the document's shell recipes (bash, zstd, jq) as subprocesses.
pytestmark = pytest.mark.slow

NEVER = {"flush_age": 3600.0, "flush_records": 10**9, "flush_bytes": 1 << 40}


def _section_scripts() -> list[str]:
    text = FORMAT_MD.read_text()
    section = text[text.index("## 12. Paged run index") :]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def _paged_run(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "bucket"
    with Archive.open(root.as_uri(), cache_dir=tmp_path / "c", compaction_fanout=3, **NEVER) as a:
        run = a.start_run(agent="doc", run_id="paged")
        for i in range(60):
            run.checkpoint(("plan", "act", "observe")[i % 3], {"i": i, "text": "日本語"})
            run.event("tool", {"i": i})
            a.flush()
    return root, "paged"


def _bash(script: str, root: Path, run_id: str) -> str:
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=root,
        env={"RUN": run_id, "PATH": "/usr/bin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_documented_recipes_read_a_paged_run(tmp_path: Path) -> None:
    root, run_id = _paged_run(tmp_path)
    head = json.loads((root / "runs" / run_id / "index.json").read_text())
    assert head["format"] == 4
    assert head["pages"], "the run must have pages for this test to mean anything"
    refs_script, chain_script = _section_scripts()
    records = _bash(refs_script, root, run_id)
    refs = [json.loads(line) for line in (root / "refs.jsonl").read_text().splitlines()]
    index = Reader.open(root.as_uri()).index(run_id)
    assert [r["key"] for r in refs] == [s.key for s in index.segments]
    # The last command of the recipe prints every record of the run.
    lines = [json.loads(line) for line in records.splitlines() if line.startswith("{")]
    restored = Reader.open(root.as_uri()).restore(run_id)
    assert [r["seq"] for r in lines if "seq" in r][-len(restored.records) :] == [
        r.seq for r in restored.records
    ]
    chain = _bash(chain_script, root, run_id).splitlines()
    assert chain == [f"OK  {s.key}" for s in index.segments]


def test_the_chain_recipe_catches_a_forged_link(tmp_path: Path) -> None:
    root, run_id = _paged_run(tmp_path)
    refs_script, chain_script = _section_scripts()
    _bash(refs_script, root, run_id)
    refs = [json.loads(line) for line in (root / "refs.jsonl").read_text().splitlines()]
    # A merged segment that the next one names by its link, not its own hash.
    merged = next(
        i
        for i in range(len(refs) - 1)
        if refs[i].get("link") and refs[i + 1]["prev_sha256"] == refs[i]["link"]
    )
    assert refs[merged]["link"] != refs[merged]["sha256"]
    refs[merged]["link"] = "0" * 64  # forged
    (root / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    chain = _bash(chain_script, root, run_id).splitlines()
    assert chain[merged + 1] == f"BAD {refs[merged + 1]['key']}"
    assert sum(line.startswith("BAD ") for line in chain) == 1
