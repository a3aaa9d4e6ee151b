"""``/api/runs?until=...``: runs created up to a time (inclusive), with or without
``since``; a bad time is a 400 that says what to do, and nothing is read."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from runarchive import Archive, Reader
from runarchive.viewer.server import serving


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


def run_ids(port: int, **query: str) -> list[str]:
    status, body = get(port, "/api/runs?" + urlencode(query))
    assert status == 200, body
    return sorted(r["run_id"] for r in json.loads(body)["runs"])


def test_until_lists_the_runs_created_up_to_a_time(
    archive_factory: Callable[..., Archive],
) -> None:
    archive = archive_factory()
    for rid in ("run-a", "run-b", "run-c"):
        with archive.start_run(agent="a", run_id=rid) as run:
            run.checkpoint("plan", {"rid": rid})
            run.complete(None)
    archive.flush()
    with Reader.open(archive.url) as reader:
        created = {rid: reader.index(rid).created_at for rid in ("run-a", "run-b", "run-c")}
        assert created["run-a"] < created["run-b"] < created["run-c"]
        with serving(reader) as port:
            a, b = created["run-a"].isoformat(), created["run-b"].isoformat()
            assert run_ids(port, until=a) == ["run-a"]  # inclusive
            assert run_ids(port, until=b) == ["run-a", "run-b"]
            assert run_ids(port, since=b, until=b) == ["run-b"]
            assert run_ids(port, since=b) == ["run-b", "run-c"]
            assert run_ids(port, until="2000-01-01T00:00:00Z") == []


class Spy:
    """A source that records what the server asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            raise AssertionError(f"the server read {name} for a bad query")

        return call


def test_a_bad_until_is_a_400_that_says_what_to_do_and_reads_nothing() -> None:
    spy = Spy()
    with serving(spy) as port:
        for until, says in (
            ("yesterday", "not an ISO 8601 time: 'yesterday'"),
            ("2026-01-01T00:00:00", "give a timezone, e.g. 2026-01-01T00:00:00Z"),
        ):
            status, body = get(port, "/api/runs?" + urlencode({"until": until}))
            assert status == 400
            assert says in body.decode()
    assert spy.calls == []
