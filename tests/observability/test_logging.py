"""Structured logging: records about a run carry its id and seq; no state, names,
metadata, event data or credentials reach a log line, even at DEBUG.

Only runarchive's own records are checked for agent data: botocore logs request
bodies at DEBUG (docs/observability.md says how to keep it at WARNING). Its whole
output is still checked for the secret key."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from support.backends import Backend

from runarchive.logs import JsonFormatter, log_run

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "runarchive"
MARK = "zq7MARKERx"  # in every piece of agent data the workload writes
SECRET = "zq7SECRETx-wJalrXUtnFEMI-K7MDENG"


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """Everything every logger emits at DEBUG, as JSON lines (and in ``caplog``)."""
    caplog.set_level(logging.DEBUG)  # the root logger: botocore, urllib3... too
    caplog.set_level(logging.DEBUG, logger="runarchive")
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield text
    finally:
        root.removeHandler(handler)


def _workload(backend: Backend) -> tuple[str, list[int]]:
    """A run with marked data everywhere, two flushes, a restore, compaction and gc;
    returns the run id and the seqs each flush archived through."""
    archive = backend.open(flush_age=3600)
    with archive.start_run(agent=MARK + "agent", metadata={"m": MARK + "meta"}) as run:
        run.checkpoint(MARK + "name", {"s": MARK + "state"}, metadata={"k": MARK + "cpmeta"})
        run.event(MARK + "kind", {"d": MARK + "data"}, lane=MARK + "lane")
        run.flush()
        run.checkpoint(MARK + "name", {"s": MARK + "state2"})
        run.event(MARK + "kind", [MARK + "data2"])
        run.complete({"r": MARK + "result"})
    restored = archive.restore(run.run_id)
    assert len(restored.records) == 4
    (result,) = archive.compact(run.run_id)
    assert result.done
    archive.gc(grace=timedelta(0))
    archive.close()
    return run.run_id, [2, 4]


def test_logs_carry_the_run_and_seq_and_no_agent_data_or_secret(
    backend: Backend,
    captured: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = [SECRET]
    if backend.name == "moto":  # accepts any credentials: give it a marked secret
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    elif backend.name == "seaweedfs":  # the real server checks them: its own secret
        import os  # noqa: PLC0415

        secrets.append(os.environ["AWS_SECRET_ACCESS_KEY"])
    run_id, flushed = _workload(backend)

    ours = [r for r in caplog.records if r.name.startswith("runarchive")]
    assert ours, "runarchive logged nothing at DEBUG"
    assert {r.name for r in ours} >= {
        "runarchive.archive",
        "runarchive.flush",
        "runarchive.run",
        "runarchive.restore",
        "runarchive.compact",
        "runarchive.gc",
    }
    # The flushes: run id and the seq each one archived through, as attributes and text.
    done = [r for r in ours if r.name == "runarchive.flush" and "archived through" in r.msg]
    assert [(getattr(r, "run_id", None), getattr(r, "seq", None)) for r in done] == [
        (run_id, seq) for seq in flushed
    ]
    for r in done:
        assert isinstance(getattr(r, "records", None), int)
        assert isinstance(getattr(r, "stored_bytes", None), int)
    # Every record about a run names it in its text too.
    about_run = [r for r in ours if getattr(r, "run_id", None) is not None]
    assert len(about_run) >= 8
    for r in about_run:
        assert r.run_id in r.getMessage(), r.getMessage()
        assert hasattr(r, "seq")
    # No agent data and no secret in any record of ours: message, args or extras.
    for r in ours:
        for text in (r.getMessage(), repr(r.args), repr(vars(r))):
            assert MARK not in text, (r.name, r.getMessage())
            for secret in secrets:
                assert secret not in text
    # Nor the secret in anything any logger printed (botocore included).
    everything = captured.getvalue() + caplog.text
    assert everything
    for secret in secrets:
        assert secret not in everything
    # The JSON lines carry the attributes.
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    flush_lines = [
        d for d in lines if d["logger"] == "runarchive.flush" and "archived through" in d["message"]
    ]
    assert [(d["run_id"], d["seq"]) for d in flush_lines] == [(run_id, seq) for seq in flushed]


def test_log_run_formats_once_enabled_and_points_at_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("runarchive.test")
    caplog.set_level(logging.INFO, logger="runarchive")
    log_run(logger, logging.DEBUG, "r1", 3, "not emitted %s", "x")
    log_run(logger, logging.INFO, "r1", 3, "flushed %d records", 5, records=5)
    (rec,) = caplog.records
    assert rec.getMessage() == "run r1: flushed 5 records"
    assert (rec.run_id, rec.seq, rec.records) == ("r1", 3, 5)  # type: ignore[attr-defined]
    assert rec.funcName == "test_log_run_formats_once_enabled_and_points_at_the_caller"
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["run_id"] == "r1"
    assert doc["seq"] == 3
    assert doc["logger"] == "runarchive.test"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]


def test_the_library_prints_nothing_and_logs_under_its_documented_names() -> None:
    # Modules moved into subsystem folders keep the logger names docs/observability.md
    # documents, so every getLogger call names a string literal under "runarchive."
    # (or __name__, which is one), and every documented logger is one of them.
    printing, names = [], set()
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        rel = path.relative_to(SRC)
        if rel.parts[0] != "cli" and _calls(tree, "print"):
            printing.append(str(rel))
        if rel.parts[0] == "cli":
            continue  # the command line configures the "runarchive" logger (-v / -q)
        for call in _calls(tree, "getLogger"):
            arg = call.args[0] if call.args else None
            if isinstance(arg, ast.Name) and arg.id == "__name__":
                names.add("runarchive." + ".".join(rel.with_suffix("").parts))
            else:
                assert isinstance(arg, ast.Constant), f"{rel}: getLogger of a computed name"
                assert str(arg.value).startswith("runarchive."), f"{rel}: {arg.value}"
                names.add(str(arg.value))
    assert printing == []
    doc = (ROOT / "docs" / "observability.md").read_text().split("JsonFormatter")[0]
    documented = set(re.findall(r"^\| `(runarchive\.[a-z_.]+)` \|", doc, re.M))
    assert len(documented) >= 10
    assert documented <= names, sorted(documented - names)
