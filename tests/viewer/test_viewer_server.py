"""runarchive ui's server: fixed routes, GET/HEAD only, run ids checked, the JSON the
page draws."""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import invoke

from runarchive import Archive, Policy, Reader
from runarchive.viewer.server import serving


@pytest.fixture
def served(archive_factory: Callable[..., Archive]) -> Iterator[int]:
    archive = archive_factory(policy=Policy(keep_all=True))
    with archive.start_run(agent="planner", run_id="run-1", metadata={"task": "t"}) as run:
        run.checkpoint("plan", {"step": 1, "items": [1, 2]})
        run.event("tool_call", {"tool": "search"}, lane="tools")
        run.checkpoint("plan", {"step": 2, "items": [1]})
        run.complete({"answer": 42})
    archive.flush()
    with Reader.open(archive.url) as reader, serving(reader) as port:
        yield port


def request(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()


def get_json(port: int, path: str) -> Any:
    status, headers, body = request(port, "GET", path)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def test_the_page_and_the_json_routes(served: int) -> None:
    status, headers, body = request(served, "GET", "/")
    assert status == 200
    assert b'"mode":"server"' in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    runs = get_json(served, "/api/runs")
    assert [r["run_id"] for r in runs["runs"]] == ["run-1"]
    assert get_json(served, "/api/runs?status=failed")["runs"] == []
    assert get_json(served, "/api/runs?agent=planner")["runs"][0]["agent"] == "planner"
    run = get_json(served, "/api/run?id=run-1")
    assert [r["seq"] for r in run["records"]] == [1, 2, 3]
    assert run["verify"]["ok"] is True
    record = get_json(served, "/api/record?id=run-1&seq=3")
    assert record["previous_seq"] == 1
    assert record["diff"] == [
        {"op": "changed", "path": "/step"},
        {"op": "removed", "path": "/items/1"},
    ]


def test_head_is_get_without_a_body(served: int) -> None:
    status, headers, body = request(served, "HEAD", "/api/runs")
    assert status == 200
    assert int(headers["Content-Length"]) > 0
    assert body == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_every_other_method_is_refused(served: int, method: str) -> None:
    status, headers, _ = request(served, method, "/api/runs")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/etc/passwd", 404),
        ("/../../etc/passwd", 404),
        ("/api/runs/../run", 404),
        ("/api/run?id=../../etc/passwd", 400),
        ("/api/run?id=..%2F..%2Fx", 400),
        ("/api/run?id=", 400),
        ("/api/run?id=no-such-run", 404),
        ("/api/record?id=run-1&seq=-1", 400),
        ("/api/record?id=run-1&seq=99", 404),
        ("/api/runs?status=weird", 400),
        ("/api/runs?since=yesterday", 400),
    ],
)
def test_paths_outside_the_routes_and_bad_ids_are_refused(
    served: int, path: str, status: int
) -> None:
    got, _, body = request(served, "GET", path)
    assert got == status, body


def test_an_encrypted_run_without_its_key_names_the_key(
    archive_factory: Callable[..., Archive],
) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    archive = archive_factory(encryption="local", encryption_keys=f"k1={key}")
    with archive.start_run(agent="sealed", run_id="run-sealed", metadata={"secret": 1}) as run:
        run.checkpoint("plan", {"secret": "s3cr3t"})
    archive.flush()
    with Reader.open(archive.url) as reader, serving(reader) as port:
        page = get_json(port, "/api/run?id=run-sealed")
        status, _, body = request(port, "GET", "/api/record?id=run-sealed&seq=1")
    assert "local:k1" in page["missing_key"]
    assert page["records"] == []
    assert page["metadata"] == {}
    assert page["sealed"]  # the sealed fields are named, their values not shown
    assert b"s3cr3t" not in json.dumps(page).encode()
    assert status == 403
    assert b"k1" in body
    assert b"s3cr3t" not in body


def test_ui_refuses_a_port_that_is_not_one(tmp_path: Path) -> None:
    done = invoke(["--url", (tmp_path / "b").as_uri(), "ui", "--port", "70000"])
    assert done.returncode == 2, done.stderr
    assert "--port 70000 is not a port" in done.stderr
    assert "Traceback" not in done.stderr


def test_ui_on_a_port_in_use_says_to_pick_another(
    archive_factory: Callable[..., Archive],
) -> None:
    archive = archive_factory()
    with archive.start_run(agent="a", run_id="run-1") as run:
        run.checkpoint("plan", {"step": 1})
    archive.flush()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = invoke(["--url", archive.url, "ui", "--port", str(port)])
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--port 0" in done.stderr
    assert "Traceback" not in done.stderr
