"""Compliance export (issue 5 item 3): bundles checked by standard tools, verify-export,
refusal of corrupt runs, filters, export into another bucket, the CLI.

The bundle checks that matter most run in a ``bash`` subprocess with only ``tar``,
``sha256sum``, ``jq``, ``zstd``, ``cmp`` and ``diff`` (no Python, no runarchive): the
commands the bundle's README gives an auditor. Their output is compared with
``Reader.restore``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter
from support.backends import Backend, open_backend, s3_settings, s3_store_for
from support.cli import run_cli
from support.servers import S3Server

from runarchive import Archive, Policy, Reader
from runarchive.compliance.export import verify_export
from runarchive.errors import CorruptObjectError, InvalidInputError, RunNotFoundError
from runarchive.format.model import Record, parse_index

RECORD = TypeAdapter(Record)
DONE, FAILED, EMPTY = "exp-done", "exp-failed", "exp-empty"
STATE = {"messages": [{"role": "user", "content": 'Grüße — 日本語 🚀 "q" \\ \n'}], "n": 2**53 - 1}
TOOLS = ("bash", "tar", "sha256sum", "jq", "zstd", "cmp", "diff", "find")


@pytest.fixture(params=["file", pytest.param("seaweedfs", marks=pytest.mark.real_server)])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An archive on file:// or on the real S3 server, holding the three runs below."""
    for b in open_backend(str(request.param), request, tmp_path):
        populate(b)
        yield b


def populate(backend: Backend) -> dict[str, datetime]:
    """A completed run over several segments with checkpoints dropped by the policy and
    events on two lanes, a failed run and an empty one; returns times between them."""
    marks: dict[str, datetime] = {}
    archive = backend.open(max_segment_records=4, policy=Policy(keep_last=1))
    with archive.start_run(agent="auditor-a", run_id=DONE, metadata={"ticket": "OPS-1"}) as run:
        for i in range(12):
            run.checkpoint("plan" if i % 3 else "act", {**STATE, "i": i}, metadata={"i": i})
            if i % 2:
                run.event(
                    "tool_call", {"i": i, "tool": "search"}, lane="tools" if i % 4 else "main"
                )
        run.complete({"answer": 42})
    marks["after_done"] = datetime.now(UTC)
    with pytest.raises(RuntimeError, match="simulated"):
        failing_run(archive)
    marks["after_failed"] = datetime.now(UTC)
    with archive.start_run(agent="auditor-a", run_id=EMPTY):
        pass
    archive.close()
    return marks


def failing_run(archive: Archive) -> None:
    with archive.start_run(agent="auditor-b", run_id=FAILED) as run:
        run.checkpoint("only", {"x": 1})
        run.event("llm_call", {"tokens": 12})
        raise RuntimeError("simulated tool failure")


def tool_env() -> dict[str, str]:
    for tool in TOOLS:
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` is not on PATH; `make test` installs zstd and jq", pytrace=False)
    # No PYTHONPATH, no virtualenv: the checks below cannot use runarchive.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}


def sh(script: str, cwd: Path) -> str:
    """Run ``script`` with bash (standard tools only); fail the test on a non-zero exit."""
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# The README's checks, verbatim in substance (tests/compliance/test_export.py keeps them honest).
CHECK_BUNDLE = r"""
sha256sum -c MANIFEST.sha256 > ../sha256sum.out
diff <(find . -type f ! -name MANIFEST.sha256 | cut -c3- | LC_ALL=C sort) \
     <(cut -c67- MANIFEST.sha256)
for run in $(jq -r '.runs[].run_id' export.json); do
  (
    cd "runs/$run"
    jq -r '.segments[] | "\(.sha256) \(.file)"' run.json | while read -r sha f; do
      test "$(zstd -dc "$f" | sha256sum | cut -c1-64)" = "$sha" || { echo "BAD $f" >&2; exit 1; }
    done
    jq -e '[.segments[].prev_sha256] == ([null] + [.segments[].sha256])[:-1]
           and .chain_head == ([.segments[].sha256] | last)' run.json > /dev/null
    for f in $(jq -r '.segments[].file' run.json); do zstd -dc "$f" | tail -n +2; done |
      cmp - records.jsonl
    prev=null
    for f in $(jq -r '.segments[].file' run.json); do
      test "$(zstd -dc "$f" | head -n 1 | jq -r '.prev_sha256')" = "$prev"
      prev=$(zstd -dc "$f" | sha256sum | cut -c1-64)
    done
    test "$(jq -r '.chain_head' run.json)" = "$(jq -r '.chain_head' index.json)"
    jq -c '{run: "'"$run"'", summary: {status, records, checkpoints, events, dropped,
            chain_head, segments: (.segments | length)},
            lines: ([inputs] | length)}' run.json records.jsonl
  )
done
"""


def restored(backend: Backend, run_id: str) -> list[Any]:
    with Reader.open(backend.url, **backend.settings) as reader:
        return list(reader.restore(run_id).records)


def export(backend: Backend, run_ids: list[str] | None = None, **kw: Any) -> Any:
    with Reader.open(backend.url, **backend.settings) as reader:
        return reader.export(run_ids, **kw)


def leftovers(where: Path) -> list[str]:
    return sorted(p.name for p in where.iterdir() if p.name.startswith("."))


# -- the bundle, read with standard tools ----------------------------------------


def test_tar_bundle_checks_with_standard_tools_and_equals_restore(
    source: Backend, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = export(source, [DONE, FAILED, EMPTY], dest=out / "audit-q1.tar")
    assert result.kind == "tar"
    assert [r.run_id for r in result.runs] == [DONE, FAILED, EMPTY]
    assert result.bytes == (out / "audit-q1.tar").stat().st_size
    assert leftovers(out) == []

    # Plain tar, one top-level directory named after the file.
    sh("tar -xf audit-q1.tar", out)
    bundle = out / "audit-q1"
    assert sorted(p.name for p in out.iterdir()) == ["audit-q1", "audit-q1.tar"]
    summaries = {d["run"]: d for d in map(json.loads, sh(CHECK_BUNDLE, bundle).splitlines())}
    oks = (out / "sha256sum.out").read_text().splitlines()
    assert oks
    assert all(line.endswith(": OK") for line in oks)
    assert len(oks) == result.files - 1  # every file but the manifest itself

    for run_id in (DONE, FAILED, EMPTY):
        index = parse_index((bundle / "runs" / run_id / "index.json").read_bytes(), "index")
        with Reader.open(source.url, **source.settings) as reader:
            assert index == reader.index(run_id)
        jq = sh(f"jq -c . runs/{run_id}/records.jsonl", bundle)
        records = [RECORD.validate_python(json.loads(line)) for line in jq.splitlines()]
        assert records == restored(source, run_id)
        s = summaries[run_id]
        assert s["lines"] == len(records) == s["summary"]["records"]
        assert s["summary"]["chain_head"] == index.chain_head
        assert s["summary"]["segments"] == len(index.segments)

    done = summaries[DONE]["summary"]
    assert done["status"] == "completed"
    assert done["segments"] >= 3
    assert done["dropped"] > 0
    assert done["events"] == 6
    assert summaries[FAILED]["summary"]["status"] == "failed"
    assert summaries[EMPTY]["summary"] == {
        "status": "completed", "records": 0, "checkpoints": 0, "events": 0, "dropped": 0,
        "chain_head": None, "segments": 0,
    }  # fmt: skip
    meta = json.loads((bundle / "export.json").read_text())
    assert meta["bundle_format"] == 1
    assert meta["source"] == source.url
    assert meta["filter"]["run_ids"] == [DONE, FAILED, EMPTY]
    assert {r["run_id"]: r["chain_head"] for r in meta["runs"]} == {
        r.run_id: r.chain_head for r in result.runs
    }
    readme = (bundle / "README").read_text()
    assert "sha256sum -c MANIFEST.sha256" in readme
    assert "tar -xf" in readme
    assert verify_export(out / "audit-q1.tar") == []
    assert verify_export(bundle) == []


def test_a_running_run_exports_as_a_snapshot(tmp_path: Path) -> None:
    url = (tmp_path / "arch").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "c", max_segment_records=4) as archive:
        run = archive.start_run(agent="live", run_id="live-1")
        for i in range(9):
            run.event("tick", {"i": i})
        archive.flush()
        result = archive.export(["live-1"], dest=tmp_path / "snap")
        run.complete()
    doc = json.loads((tmp_path / "snap" / "runs" / "live-1" / "run.json").read_text())
    assert doc["status"] == "running"
    assert doc["records"] == 9 == result.runs[0].records
    assert verify_export(tmp_path / "snap") == []


# -- verify-export names the file ----------------------------------------------------


def _flip_records(b: Path) -> str:
    path = b / "runs" / DONE / "records.jsonl"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return f"runs/{DONE}/records.jsonl"


def _delete_segment(b: Path) -> str:
    seg = sorted((b / "runs" / DONE / "segments").iterdir())[1]
    seg.unlink()
    return f"runs/{DONE}/segments/{seg.name}"


def _extra_file(b: Path) -> str:
    (b / "runs" / FAILED / "notes.txt").write_text("added later\n")
    return f"runs/{FAILED}/notes.txt"


def _edit_manifest(b: Path) -> str:
    manifest = b / "MANIFEST.sha256"
    lines = manifest.read_text().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if line.rstrip().endswith("/run.json"))
    lines[n] = ("0" if lines[n][0] != "0" else "1") + lines[n][1:]
    manifest.write_text("".join(lines))
    return lines[n][66:].strip()


@pytest.mark.slow
@pytest.mark.parametrize(
    "tamper",
    [_flip_records, _delete_segment, _extra_file, _edit_manifest],
    ids=lambda f: f.__name__,
)
def test_verify_export_names_the_tampered_file(tamper: Any, tmp_path: Path) -> None:
    backend = Backend("file", (tmp_path / "bucket").as_uri(), {}, tmp_path)
    populate(backend)
    export(backend, [DONE, FAILED], dest=tmp_path / "b")
    assert verify_export(tmp_path / "b") == []
    name = tamper(tmp_path / "b")
    problems = verify_export(tmp_path / "b")
    assert problems, name
    assert name in {p.path for p in problems}, [str(p) for p in problems]

    # The same bundle as a .tar: verify-export reads it in place.
    with tarfile.open(tmp_path / "b.tar", "w") as tar:
        tar.add(tmp_path / "b", arcname="b")
    cli = run_cli(["verify-export", str(tmp_path / "b.tar"), "--json"], tmp_path)
    assert cli.returncode == 1
    doc = json.loads(cli.stdout)
    assert doc["ok"] is False
    assert name in {p["path"] for p in doc["problems"]}
    text = run_cli(["verify-export", str(tmp_path / "b")], tmp_path)
    assert text.returncode == 1
    assert f"{name}: " in text.stdout
    backend.close_all()


def test_sha256sum_and_the_readme_diff_catch_tampering_too(tmp_path: Path) -> None:
    backend = Backend("file", (tmp_path / "bucket").as_uri(), {}, tmp_path)
    populate(backend)
    export(backend, [DONE], dest=tmp_path / "b")
    _flip_records(tmp_path / "b")
    env = tool_env()
    check = subprocess.run(
        ["sha256sum", "-c", "MANIFEST.sha256"],
        cwd=tmp_path / "b",
        env=env,
        capture_output=True,
        check=False,
    )
    assert check.returncode == 1
    assert f"runs/{DONE}/records.jsonl: FAILED" in check.stdout.decode()
    (tmp_path / "b" / "extra").write_text("x")
    readme_diff = (
        "diff <(find . -type f ! -name MANIFEST.sha256 | cut -c3- | LC_ALL=C sort) "
        "<(cut -c67- MANIFEST.sha256)"
    )
    diff = subprocess.run(
        ["bash", "-c", readme_diff],
        check=False,
        cwd=tmp_path / "b",
        env=env,
        capture_output=True,
        text=True,
    )
    assert diff.returncode == 1
    assert "< extra" in diff.stdout


def test_verify_export_catches_a_consistent_rewrite_of_a_segment(tmp_path: Path) -> None:
    """Recomputing MANIFEST.sha256 after editing a record does not hide the edit: the
    segments, their sha256 in index.json and the chain still disagree."""
    backend = Backend("file", (tmp_path / "bucket").as_uri(), {}, tmp_path)
    populate(backend)
    export(backend, [DONE], dest=tmp_path / "b")
    b = tmp_path / "b"
    rec = b / "runs" / DONE / "records.jsonl"
    rec.write_bytes(rec.read_bytes().replace(b'"tool":"search"', b'"tool":"delete"', 1))
    lines = [
        f"{_sha(b / p)}  {p}\n"
        for p in sorted(
            str(q.relative_to(b))
            for q in b.rglob("*")
            if q.is_file() and q.name != "MANIFEST.sha256"
        )
    ]
    (b / "MANIFEST.sha256").write_text("".join(lines))
    problems = verify_export(b)
    assert [p.path for p in problems] == [f"runs/{DONE}/records.jsonl"]
    assert "differs from the records of the segments" in problems[0].problem


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- export refuses a corrupt archive --------------------------------------------------


def _corrupt_segment_byte(root: Path) -> str:
    index = json.loads((root / "runs" / DONE / "index.json").read_text())
    key = index["segments"][1]["key"]
    data = bytearray((root / key).read_bytes())
    data[len(data) // 2] ^= 0x40
    (root / key).write_bytes(bytes(data))
    return str(key)


def _break_chain_link(root: Path) -> str:
    path = root / "runs" / DONE / "index.json"
    index = json.loads(path.read_text())
    index["segments"][2]["prev_sha256"] = index["segments"][0]["sha256"]
    path.write_text(json.dumps(index))
    return str(index["segments"][2]["key"])


def _roll_back_head(root: Path) -> str:
    path = root / "runs" / DONE / "index.json"
    index = json.loads(path.read_text())
    index["chain_head"] = index["segments"][-2]["sha256"]
    path.write_text(json.dumps(index))
    return f"runs/{DONE}/index.json"


def _swap_segments(root: Path) -> str:
    """Swap the bodies of two segments: each still decodes, but the checksums fail."""
    index = json.loads((root / "runs" / DONE / "index.json").read_text())
    a, b = (root / index["segments"][i]["key"] for i in (0, 1))
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    return str(index["segments"][0]["key"])


@pytest.mark.parametrize(
    "corrupt",
    [_corrupt_segment_byte, _break_chain_link, _roll_back_head, _swap_segments],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize("dest_kind", ["tar", "directory", "file-url"])
def test_export_refuses_a_corrupt_run_and_leaves_nothing(
    corrupt: Any, dest_kind: str, tmp_path: Path
) -> None:
    backend = Backend("file", (tmp_path / "bucket").as_uri(), {}, tmp_path)
    populate(backend)
    key = corrupt(tmp_path / "bucket")
    out = tmp_path / "out"
    out.mkdir()
    dest: str | Path = {
        "tar": out / "b.tar",
        "directory": out / "b",
        "file-url": (out / "b").as_uri(),
    }[dest_kind]
    with pytest.raises(CorruptObjectError) as err:
        export(backend, [FAILED, DONE], dest=dest)
    assert err.value.key == key
    assert repr(key) in str(err.value)
    if dest_kind == "file-url":
        assert [p for p in (out / "b").rglob("*") if p.is_file()] == []
    else:
        assert list(out.iterdir()) == []
    # The sound run alone still exports.
    assert export(backend, [FAILED], dest=out / "ok.tar").runs[0].run_id == FAILED


def test_export_refuses_a_used_destination(tmp_path: Path) -> None:
    backend = Backend("file", (tmp_path / "bucket").as_uri(), {}, tmp_path)
    populate(backend)
    export(backend, [FAILED], dest=tmp_path / "b.tar")
    before = (tmp_path / "b.tar").read_bytes()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    for dest in (tmp_path / "b.tar", tmp_path / "d", tmp_path / "nope" / "b.tar"):
        with pytest.raises(InvalidInputError):
            export(backend, [FAILED], dest=dest)
    with pytest.raises(InvalidInputError, match=r"plain \.tar"):
        export(backend, [FAILED], dest=tmp_path / "b.tar.gz")
    assert (tmp_path / "b.tar").read_bytes() == before
    (tmp_path / "empty").mkdir()  # an empty directory is fine
    export(backend, [FAILED], dest=tmp_path / "empty")
    assert verify_export(tmp_path / "empty") == []
    export(backend, [FAILED], dest=(tmp_path / "s").as_uri())
    with pytest.raises(InvalidInputError, match="already holds objects"):
        export(backend, [DONE], dest=(tmp_path / "s").as_uri())
    assert verify_export((tmp_path / "s").as_uri()) == []


# -- choosing runs ----------------------------------------------------------------------


def test_export_by_filter(tmp_path: Path) -> None:
    backend = Backend("file", (tmp_path / "bucket").as_uri(), {}, tmp_path)
    marks = populate(backend)
    counter = itertools.count()

    def exported(**kw: Any) -> list[str]:
        dest = tmp_path / f"b{next(counter)}"
        result = export(backend, dest=dest, **kw)
        meta = json.loads((dest / "export.json").read_text())
        assert [r["run_id"] for r in meta["runs"]] == [r.run_id for r in result.runs]
        assert verify_export(dest) == []
        return [r.run_id for r in result.runs]

    assert exported(agent="auditor-a") == [DONE, EMPTY]
    assert exported(agent="auditor-b") == [FAILED]
    assert exported(status="failed") == [FAILED]
    assert exported(status="completed") == [DONE, EMPTY]
    assert exported(since=marks["after_done"], until=marks["after_failed"]) == [FAILED]
    assert exported(since=marks["after_done"]) == [FAILED, EMPTY]
    assert exported(until=marks["after_done"], agent="auditor-a") == [DONE]
    assert exported(since=datetime(1970, 1, 1, tzinfo=UTC)) == [DONE, FAILED, EMPTY]
    meta = json.loads((tmp_path / "b0" / "export.json").read_text())
    assert meta["filter"] == {
        "run_ids": None, "agent": "auditor-a", "since": None, "until": None, "status": None
    }  # fmt: skip

    with pytest.raises(InvalidInputError, match="not both"):
        export(backend, [DONE], agent="auditor-a", dest=tmp_path / "x")
    with pytest.raises(InvalidInputError, match="nothing to export"):
        export(backend, dest=tmp_path / "x")
    with pytest.raises(RunNotFoundError, match="matches the filter"):
        export(backend, agent="nobody", dest=tmp_path / "x")
    with pytest.raises(RunNotFoundError, match="no run 'missing'"):
        export(backend, ["missing"], dest=tmp_path / "x")
    future = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(RunNotFoundError):
        export(backend, since=future, dest=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_progress_bar_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backend = Backend("file", (tmp_path / "bucket").as_uri(), {}, tmp_path)
    populate(backend)
    export(backend, [DONE], dest=tmp_path / "b", progress=True)
    err = capsys.readouterr().err
    with Reader.open(backend.url) as reader:
        n = len(reader.index(DONE).segments)
    assert f"exporting 1 run(s) [{'#' * 30}] {n}/{n}" in err


# -- into another bucket ------------------------------------------------------------------


@pytest.mark.real_server
def test_export_into_another_bucket_with_object_lock(
    seaweed: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    settings = s3_settings(seaweed)
    backend = Backend("seaweedfs", seaweed.url(seaweed.make_bucket(), "agents"), settings, tmp_path)
    populate(backend)
    vault = seaweed.make_bucket("vault", object_lock=True)
    dest = seaweed.url(vault, "exports/2026-q1")
    with Reader.open(
        backend.url, object_lock_mode="GOVERNANCE", object_lock_days=1, **settings
    ) as reader:
        result = reader.export([DONE, FAILED], dest=dest)
        assert result.kind == "store"
        assert result.dest.startswith(f"s3://{vault}/exports/2026-q1/")
        assert verify_export(dest, config=reader.config) == []
        with pytest.raises(InvalidInputError, match="already holds objects"):
            reader.export([EMPTY], dest=dest)

    # Read it back with a plain client: every object the manifest lists, locked.
    client = seaweed.client()
    got = client.list_objects_v2(Bucket=vault, Prefix="exports/2026-q1/")
    keys = sorted(o["Key"].removeprefix("exports/2026-q1/") for o in got["Contents"])
    assert len(keys) == result.files
    assert "MANIFEST.sha256" in keys
    download = tmp_path / "download"
    for key in keys:
        (download / key).parent.mkdir(parents=True, exist_ok=True)
        body = client.get_object(Bucket=vault, Key=f"exports/2026-q1/{key}")["Body"].read()
        (download / key).write_bytes(body)
        head = client.head_object(Bucket=vault, Key=f"exports/2026-q1/{key}")
        assert head.get("ObjectLockMode") == "GOVERNANCE", key
    sh("sha256sum -c --quiet MANIFEST.sha256", download)
    assert verify_export(download) == []
    records = [
        RECORD.validate_python(orjson.loads(line))
        for line in (download / "runs" / DONE / "records.jsonl").read_bytes().splitlines()
    ]
    assert records == restored(backend, DONE)

    # A changed object in the bucket is named.
    store = s3_store_for(seaweed, vault, "exports/2026-q1")
    try:
        key = f"runs/{FAILED}/records.jsonl"
        body = store.get(key).body.replace(b'"tokens":12', b'"tokens":13')
        store.put(key, body)  # a new version over the locked one, as an attacker would
        assert {p.path for p in verify_export(store)} == {key}
    finally:
        store.close()
    backend.close_all()


# -- the command line -------------------------------------------------------------------


@pytest.mark.slow
def test_cli_export_and_verify_export(tmp_path: Path) -> None:
    backend = Backend("file", (tmp_path / "bucket").as_uri(), {}, tmp_path)
    populate(backend)
    url = ["--url", backend.url]
    done = run_cli([*url, "export", DONE, FAILED, "--out", "b.tar", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["kind"] == "tar"
    assert doc["dest"] == str(tmp_path / "b.tar")
    assert [r["run_id"] for r in doc["runs"]] == [DONE, FAILED]
    assert doc["bytes"] == (tmp_path / "b.tar").stat().st_size
    assert set(doc["runs"][0]) == {"run_id", "status", "records", "segments", "chain_head"}

    text = run_cli([*url, "export", "--status", "failed", "--out", "f"], tmp_path)
    assert text.returncode == 0, text.stderr
    assert FAILED in text.stdout
    assert "exported  1 run to" in text.stdout

    ok = run_cli(["verify-export", "b.tar"], tmp_path)
    assert ok.returncode == 0
    assert "b.tar: sound" in ok.stdout
    ok_json = run_cli(["verify-export", "f", "--json"], tmp_path)
    assert json.loads(ok_json.stdout) == {"bundle": "f", "ok": True, "problems": []}

    missing = run_cli([*url, "export", "nope", "--out", "n.tar"], tmp_path)
    assert missing.returncode == 2
    assert "no run 'nope'" in missing.stderr
    assert not (tmp_path / "n.tar").exists()
    again = run_cli([*url, "export", DONE, "--out", "b.tar"], tmp_path)
    assert again.returncode == 2
    assert "b.tar" in again.stderr
    both = run_cli([*url, "export", DONE, "--agent", "a", "--out", "x"], tmp_path)
    assert both.returncode == 2
    assert "not both" in both.stderr
    assert run_cli([*url, "export", DONE], tmp_path).returncode == 2  # --out is required
    gone = run_cli(["verify-export", "does-not-exist"], tmp_path)
    assert gone.returncode == 2
    assert "does not exist" in gone.stderr
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar" * 100)
    assert run_cli(["verify-export", str(junk)], tmp_path).returncode == 2

    # A tar with a member changed in place.
    data = (tmp_path / "b.tar").read_bytes()
    rec = io.BytesIO(data)
    with tarfile.open(fileobj=rec) as tar:
        member = tar.getmember(f"b/runs/{DONE}/records.jsonl")
    at = member.offset_data + 10
    (tmp_path / "b.tar").write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
    bad = run_cli(["verify-export", "b.tar"], tmp_path)
    assert bad.returncode == 1
    assert f"runs/{DONE}/records.jsonl: SHA-256" in bad.stdout
