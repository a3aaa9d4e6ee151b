"""Issue 12: bad input gets a clear error of our own, and nothing is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runarchive import Archive, Reader
from runarchive.errors import InvalidInputError, StateNotSerializableError
from runarchive.jsonvalue import MAX_DEPTH, check_json_value
from runarchive.run import Run


def nest(depth: int) -> Any:
    """``depth`` lists inside each other around a 1: ``nest(2) == [[1]]``."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _open(tmp_path: Path) -> Archive:
    return Archive.open((tmp_path / "bucket").as_uri(), cache_dir=tmp_path / "cache")


def _bucket_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "bucket"
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts
    )


# Each writes ``bad`` through one public entry point; ``root`` is the path it names.
Writer = Callable[[Archive, Run, Any], object]
WRITERS: dict[str, tuple[Writer, str]] = {
    "checkpoint state": (lambda a, r, bad: r.checkpoint("c", {"k": bad}), 'state["k"]'),
    "checkpoint metadata": (
        lambda a, r, bad: r.checkpoint("c", {}, metadata={"k": bad}),
        'metadata["k"]',
    ),
    "event data": (lambda a, r, bad: r.event("e", [bad]), "data[0]"),
    "run metadata": (
        lambda a, r, bad: a.start_run(agent="x", metadata={"k": bad}),
        'metadata["k"]',
    ),
    "run result": (lambda a, r, bad: r.complete({"k": bad}), 'result["k"]'),
}


def _refused_and_nothing_written(
    tmp_path: Path, where: str, bad: Any, problem: str
) -> StateNotSerializableError:
    """Write ``bad`` at ``where``; check the error and that the cache and bucket are as before."""
    write, root = WRITERS[where]
    archive = _open(tmp_path)
    try:
        run = archive.start_run(agent="x", run_id="r1")
        run.checkpoint("ok", {"a": 1})
        run.flush()
        before = _bucket_files(tmp_path)
        with pytest.raises(StateNotSerializableError) as info:
            write(archive, run, bad)
        assert isinstance(info.value, InvalidInputError)
        assert str(info.value).startswith(root)
        assert info.value.path.startswith(root)
        assert problem in str(info.value)
        assert "nothing was written" in str(info.value)
        assert run.last_seq == 1
        assert run.status == "running"
        assert [r.seq for r in archive.cache.records("r1")] == [1]
        assert [r.run_id for r in archive.cache.runs()] == ["r1"]
        archive.flush()
        assert _bucket_files(tmp_path) == before
        run.complete()
    finally:
        archive.close()
    restored = Reader.open((tmp_path / "bucket").as_uri()).restore("r1")
    assert [r.seq for r in restored.records] == [1]
    assert restored.index.result is None
    return info.value


# -- 1. nesting depth -----------------------------------------------------------------


@pytest.mark.parametrize("where", list(WRITERS))
@pytest.mark.parametrize("depth", [10_000, 300, MAX_DEPTH])  # MAX_DEPTH + the {"k": ...}
def test_too_deep_a_value_is_refused_with_its_path_and_the_limit(
    tmp_path: Path, where: str, depth: int
) -> None:
    exc = _refused_and_nothing_written(
        tmp_path, where, nest(depth), f"nested deeper than {MAX_DEPTH} levels"
    )
    # the path is the prefix down to the first level past the limit, not 10,000 steps
    assert exc.path.endswith("[0]")
    assert exc.path.count("[") == MAX_DEPTH


def test_the_depth_limit_is_documented_and_a_value_at_it_round_trips(tmp_path: Path) -> None:
    assert MAX_DEPTH == 128
    docs = Path(__file__).resolve().parents[1] / "docs"
    assert f"{MAX_DEPTH} levels" in (docs / "errors.md").read_text()
    deepest = nest(MAX_DEPTH - 1)  # + the {"k": ...} around it: exactly MAX_DEPTH levels
    assert check_json_value({"k": deepest}) == {"k": deepest}
    with _open(tmp_path) as archive:
        run = archive.start_run(agent="x", run_id="r1", metadata={"k": deepest})
        run.checkpoint("c", {"k": deepest}, metadata={"k": deepest})
        run.event("e", {"k": deepest})
        run.complete({"k": deepest})
    restored = Reader.open((tmp_path / "bucket").as_uri()).restore("r1")
    assert restored.index.metadata == {"k": deepest}
    assert restored.index.result == {"k": deepest}
    assert [r.seq for r in restored.records] == [1, 2]
    assert restored.checkpoints[0].state == {"k": deepest}


def test_depth_counts_dataclasses_models_and_tuples_too() -> None:
    import dataclasses  # noqa: PLC0415

    @dataclasses.dataclass
    class Box:
        inner: Any

    value: Any = 1
    for i in range(MAX_DEPTH + 5):
        value = Box(value) if i % 3 == 0 else ((value,) if i % 3 == 1 else {"d": value})
    with pytest.raises(StateNotSerializableError, match=f"deeper than {MAX_DEPTH} levels"):
        check_json_value(value)


# -- 2. lone surrogates ---------------------------------------------------------------


@pytest.mark.parametrize("where", list(WRITERS))
@pytest.mark.parametrize("text", ["\ud800", "ok \udfff then", "tail \udcff"])
def test_a_lone_surrogate_in_a_string_is_refused_with_its_path(
    tmp_path: Path, where: str, text: str
) -> None:
    exc = _refused_and_nothing_written(tmp_path, where, text, "lone surrogate")
    assert exc.path == WRITERS[where][1]


def test_a_lone_surrogate_in_a_key_is_refused_with_its_path() -> None:
    with pytest.raises(StateNotSerializableError, match="lone surrogate") as info:
        check_json_value({"a": [{"b\ud800": 1}]})
    assert info.value.path == 'state["a"][0]'
    assert "key" in str(info.value)


def test_paired_surrogates_and_other_unicode_pass() -> None:
    value = {"emoji 😀": "😀 é ß 中文 \U0010ffff", "nul": "\x00"}
    assert check_json_value(value) == value


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda a, r: r.checkpoint("c\ud800", {}), "checkpoint name"),
        (lambda a, r: r.event("e\ud800", {}), "event kind"),
        (lambda a, r: r.event("e", {}, lane="\ud800"), "lane"),
        (lambda a, r: a.start_run(agent="\ud800"), "agent"),
        (lambda a, r: a.start_run(agent="x", run_id="r\ud800"), "run_id"),
    ],
)
def test_a_lone_surrogate_in_a_name_is_invalid_input(
    tmp_path: Path, call: Callable[[Archive, Run], object], what: str
) -> None:
    with _open(tmp_path) as archive:
        run = archive.start_run(agent="x", run_id="r1")
        with pytest.raises(InvalidInputError, match=f"invalid {what}"):
            call(archive, run)
        assert run.last_seq == 0
        assert [r.run_id for r in archive.cache.runs()] == ["r1"]


def test_a_lone_surrogate_in_a_failure_message_is_escaped_not_lost(tmp_path: Path) -> None:
    with _open(tmp_path) as archive:
        archive.start_run(agent="x", run_id="r1").fail("boom \ud800")
        archive.start_run(agent="x", run_id="r2").fail(ValueError("bad \udfff"))
    reader = Reader.open((tmp_path / "bucket").as_uri())
    assert reader.index("r1").status == "failed"
    assert reader.index("r1").error == "boom \\ud800"
    assert reader.index("r2").error == "ValueError: bad \\udfff"
