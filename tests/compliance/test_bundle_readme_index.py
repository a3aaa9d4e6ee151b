"""The bundle's own README (what an auditor without runarchive reads) compares
index.json with run.json and export.json: an index edited after export, with the
manifest regenerated, passes sha256sum and the chain checks but fails step 5."""

from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runarchive import Archive

RUN = "readme-1"


def _step5(readme: str) -> str:
    lines = readme.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("  # 5."))
    end = next(
        i for i in range(start, len(lines)) if lines[i].startswith("  (Segments of format 1")
    )
    return textwrap.dedent("\n".join(lines[start:end]))


def _check(bundle: Path) -> subprocess.CompletedProcess[str]:
    script = _step5((bundle / "README").read_text())
    return subprocess.run(
        ["bash", "-c", "set -o pipefail\n" + script],
        cwd=bundle / "runs" / RUN,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _regenerate_manifest(bundle: Path) -> None:
    files = sorted(
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.name != "MANIFEST.sha256"
    )
    lines = [f"{hashlib.sha256((bundle / f).read_bytes()).hexdigest()}  {f}" for f in files]
    (bundle / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    with Archive.open(
        (tmp_path / "arch").as_uri(), cache_dir=tmp_path / "c", max_segment_records=3
    ) as archive:
        run = archive.start_run(agent="auditee", run_id=RUN, metadata={"team": "a"})
        for i in range(7):
            run.checkpoint(f"step-{i % 2}", {"i": i})
            run.event("tick", {"i": i})
        run.complete({"ok": True})
        archive.export([RUN], dest=tmp_path / "bundle")
    return tmp_path / "bundle"


def test_the_readme_index_check_passes_on_a_sound_bundle(bundle: Path) -> None:
    out = _check(bundle)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "true"


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda ix: ix.update(status="failed"), id="status"),
        pytest.param(lambda ix: ix.update(metadata={"team": "b"}), id="metadata"),
        pytest.param(lambda ix: ix.update(segments=ix["segments"][1:]), id="segment-dropped"),
    ],
)
def test_an_edited_index_with_a_regenerated_manifest_fails_step_5(
    bundle: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    path = bundle / "runs" / RUN / "index.json"
    index = json.loads(path.read_text())
    edit(index)
    path.write_text(json.dumps(index))
    _regenerate_manifest(bundle)
    assert (
        subprocess.run(
            ["sha256sum", "-c", "--quiet", "MANIFEST.sha256"], cwd=bundle, check=False
        ).returncode
        == 0
    )  # steps 1-4 cannot see it
    out = _check(bundle)
    assert out.returncode != 0, out.stdout
    assert out.stdout.strip() == "false", out.stderr
