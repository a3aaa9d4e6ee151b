"""Recipes of the README and docs/export.md run as written, with bash, jq, zstd and
sha256sum: the README's "read a run without runarchive" on compacted runs whose
replaced segments are still in the bucket, and export.md's manual bundle check on a
bundle whose index was edited and its MANIFEST.sha256 regenerated."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

import runarchive.reader as reader_module
from runarchive import Archive, Reader
from runarchive.store.counting import CountingStore
from runarchive.store.url import make_store

ROOT = Path(__file__).resolve().parents[2]
NEVER = {"flush_age": 3600.0, "flush_records": 10**9, "flush_bytes": 1 << 40}
PATH = {"PATH": "/usr/bin:/bin:/usr/local/bin"}
FLAT = {"compaction_fanout": 64}  # 24 flushes: no merge, every ref in the head
PAGED = {"compaction_fanout": 3}


def _block_after(path: Path, heading: str, lang: str) -> str:
    """The first ``lang`` code block after ``heading`` in ``path``."""
    text = path.read_text()
    found = re.search(rf"```{lang}\n(.*?)```", text[text.index(heading) :], re.S)
    assert found is not None, f"no {lang} block after {heading!r} in {path.name}"
    return found.group(1)


def _bash(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={**PATH, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write_run(root: Path, cache: Path, **settings: object) -> str:
    with Archive.open(root.as_uri(), cache_dir=cache, **NEVER, **settings) as archive:  # type: ignore[arg-type]
        with archive.start_run(agent="doc", metadata={"ticket": "OPS-12"}) as run:
            for i in range(24):
                run.checkpoint(("plan", "act", "observe")[i % 3], {"i": i, "text": "日本語"})
                run.event("tool", {"i": i})
                archive.flush()
        return run.run_id


@pytest.mark.parametrize("live", [False, True], ids=["compact", "live-compaction"])
def test_the_readme_recipe_reads_each_record_once_before_gc(tmp_path: Path, live: bool) -> None:
    root = tmp_path / "bucket"
    if live:  # merged while running: a paged head, merged segments, retired ones kept
        run_id = _write_run(root, tmp_path / "c", compaction_fanout=3, gc_grace_seconds=3600)
    else:  # `runarchive compact` of the ended run, no gc yet
        run_id = _write_run(root, tmp_path / "c")
        with Archive.open(root.as_uri(), cache_dir=tmp_path / "c2") as archive:
            [result] = archive.compact(run_id)
            assert result.skipped is None
    index = json.loads((root / "runs" / run_id / "index.json").read_text())
    assert index["retired"], "retired segments must still be in the bucket for this test"
    # What the old README said (`zstd -dc runs/<id>/seg/*.zst`) sees some records twice.
    on_disk = sorted((root / "runs" / run_id / "seg").iterdir())
    assert len(on_disk) > len(index["segments"]) + len(index.get("pages", []))

    script = _block_after(ROOT / "README.md", "### Reading an archive without runarchive", "sh")
    script = re.sub(r"^cd /srv/archive\b.*$", 'cd "$ARCHIVE"', script, flags=re.M)
    script = re.sub(r"^RUN=\S+.*$", "", script, flags=re.M)
    out = _bash(script, tmp_path, ARCHIVE=str(root), RUN=run_id)
    assert out.returncode == 0, out.stderr
    got = [json.loads(line) for line in out.stdout.splitlines()]
    expected = [r.model_dump(mode="json") for r in Reader.open(root.as_uri()).iter_records(run_id)]
    assert [r["seq"] for r in got] == [r["seq"] for r in expected]
    assert len({r["seq"] for r in got}) == len(got)
    assert [(r["type"], r.get("name"), r.get("kind")) for r in got] == [
        (r["type"], r.get("name"), r.get("kind")) for r in expected
    ]


def _bundle(tmp_path: Path, **settings: object) -> tuple[Path, str]:
    root = tmp_path / "bucket"
    run_id = _write_run(root, tmp_path / "c", **settings)
    bundle = tmp_path / "audit-q1"
    with Reader.open(root.as_uri()) as reader:
        reader.export([run_id], dest=str(bundle))
    return bundle, run_id


def _check_procedure(bundle: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    script = _block_after(
        ROOT / "docs" / "export.md", "## Checking a bundle without runarchive", "console"
    )
    script = script.replace("tar -xf audit-q1.tar && cd audit-q1", 'cd "$BUNDLE"')
    script = script.replace("cd runs/<run_id>", 'cd "runs/$RUN"')
    assert '"$BUNDLE"' in script, "the procedure changed shape"
    assert '"runs/$RUN"' in script, "the procedure changed shape"
    return _bash(script, bundle.parent, BUNDLE=str(bundle), RUN=run_id)


def _regenerate_manifest(bundle: Path) -> None:
    files = sorted(
        str(p.relative_to(bundle))
        for p in bundle.rglob("*")
        if p.is_file() and p.name != "MANIFEST.sha256"
    )
    lines = [f"{hashlib.sha256((bundle / f).read_bytes()).hexdigest()}  {f}\n" for f in files]
    (bundle / "MANIFEST.sha256").write_text("".join(lines))


@pytest.mark.parametrize("live", [False, True], ids=["plain", "paged"])
def test_the_export_procedure_passes_a_sound_bundle(tmp_path: Path, live: bool) -> None:
    bundle, run_id = _bundle(tmp_path, **(PAGED if live else FLAT))
    if live:
        assert list((bundle / "runs" / run_id).glob("pages/*")), "the run must be paged"
    out = _check_procedure(bundle, run_id)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BAD" not in out.stdout
    assert out.stdout.count("true") == 2, out.stdout


EDITS = {
    "status": (FLAT, lambda i: {**i, "status": "failed", "error": "RuntimeError: forged"}),
    "metadata": (FLAT, lambda i: {**i, "metadata": {"ticket": "OPS-13"}}),
    "a segment dropped": (FLAT, lambda i: {**i, "segments": i["segments"][1:]}),
    "a page dropped": (PAGED, lambda i: {**i, "pages": i["pages"][1:]}),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_the_export_procedure_fails_an_edited_index_with_a_regenerated_manifest(
    tmp_path: Path, edit: str
) -> None:
    settings, change = EDITS[edit]
    bundle, run_id = _bundle(tmp_path, **settings)
    index_path = bundle / "runs" / run_id / "index.json"
    index = json.loads(index_path.read_text())
    assert index["pages" if settings is PAGED else "segments"], "nothing to edit"
    index_path.write_text(json.dumps(change(index), indent=2) + "\n")
    _regenerate_manifest(bundle)
    assert (
        subprocess.run(
            ["sha256sum", "-c", "--quiet", "MANIFEST.sha256"], cwd=bundle, check=False
        ).returncode
        == 0
    ), "the forged manifest must hold, or this test proves nothing"
    out = _check_procedure(bundle, run_id)
    assert out.returncode != 0 or "BAD" in out.stdout, out.stdout


def test_the_readme_restores_read_only_on_an_empty_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README "Use": the second host restores through Reader: no cache, no write."""
    code = _block_after(ROOT / "README.md", "## Use", "python")
    writer, _, reader_part = code.partition("# On any other host")
    assert reader_part, "the README's Use block no longer has a second host"
    assert "Reader.open(" in reader_part
    assert "Archive.open(" not in reader_part
    url = (tmp_path / "bucket").as_uri()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNARCHIVE_CACHE_DIR", str(tmp_path / "host-a-cache"))
    namespace: dict[str, object] = {}
    exec(compile(writer.replace("s3://my-bucket/agents", url), "README.md", "exec"), namespace)

    stores: list[CountingStore] = []

    def counted(*args: object, **kwargs: object) -> CountingStore:
        stores.append(CountingStore(make_store(*args, **kwargs)))  # type: ignore[arg-type]
        return stores[-1]

    # Only the reader's store is counted: the writer above has closed.
    monkeypatch.setattr(reader_module, "make_store", counted)
    monkeypatch.delenv("RUNARCHIVE_CACHE_DIR")
    reader_code = "# On any other host" + reader_part.replace("s3://my-bucket/agents", url)
    exec(compile(reader_code, "README.md", "exec"), namespace)
    [store] = stores
    assert store.counts["get"] >= 2  # the index and the segment
    assert {op for op in store.counts if store.counts[op]} <= {"get", "head", "list"}
    assert not (tmp_path / ".runarchive").exists(), "the reader made a cache"
    assert "restored" in namespace
