"""runarchive ui's server under attack (no browser): DNS rebinding (foreign Host
headers), cross-origin reads, hostile request targets and methods, and a hostile
bucket. Raw sockets where http.client would refuse to send what an attacker sends."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import resource
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from support.hostile import OTHER, VICTIM, make_archive, read_index, write_index

from runarchive import Archive, Policy, Reader
from runarchive.viewer.render import render_page
from runarchive.viewer.server import make_server

HOSTILE = '<script>window.pwned=1</script>"><img src=x onerror="window.pwned=1">'
SECRET = "s3cr3t-agent-state"


class Served:
    def __init__(self, port: int, calls: list[tuple[str, str]]) -> None:
        self.port = port
        self.calls = calls  # (method, run id) the server asked its source for

    def raw(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send ``request`` as is; the status, headers (lower-cased names) and body."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        answer = b"".join(chunks)
        if not answer.startswith(b"HTTP/"):
            return 0, {}, answer  # no status line (an HTTP/0.9 answer, or none)
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"{name} sent twice"
            headers[name.lower()] = value.strip()
        return int(status_line.split()[1]), headers, body

    def get(
        self, target: str | bytes, *, host: str | None = None, method: str = "GET", **extra: str
    ) -> tuple[int, dict[str, str], bytes]:
        host = f"127.0.0.1:{self.port}" if host is None else host
        target = target.encode("latin-1") if isinstance(target, str) else target
        lines = [method.encode() + b" " + target + b" HTTP/1.1"]
        if host:
            lines.append(f"Host: {host}".encode())
        lines += [f"{k.replace('_', '-')}: {v}".encode() for k, v in extra.items()]
        lines.append(b"Connection: close")
        return self.raw(b"\r\n".join(lines) + b"\r\n\r\n")


class Spy:
    """The reader, recording which run ids the server hands it."""

    def __init__(self, reader: Reader, calls: list[tuple[str, str]]) -> None:
        self.reader, self.calls = reader, calls

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.reader, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if args:
                self.calls.append((name, str(args[0])))
            return method(*args, **kwargs)

        return call


def serve(url: str, **settings: Any) -> Iterator[Served]:
    calls: list[tuple[str, str]] = []
    with Reader.open(url) as reader:
        server = make_server(Spy(reader, calls), "127.0.0.1", 0, **settings)  # type: ignore[arg-type]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Served(server.server_address[1], calls)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("sec")
    url = (root / "bucket").as_uri()
    archive = Archive.open(url, cache_dir=root / "c", policy=Policy(keep_all=True))
    with (
        archive,
        archive.start_run(agent="planner", run_id="run-1", metadata={"n": HOSTILE}) as run,
    ):
        run.checkpoint("plan", {"secret": SECRET, "html": HOSTILE})
        run.checkpoint("plan", {"secret": SECRET, "html": "plain"})
        run.complete({"answer": 42})
    yield from serve(url)


def assert_hardened(status: int, headers: dict[str, str], body: bytes) -> None:
    """What every answer carries, errors included."""
    assert headers["x-content-type-options"] == "nosniff", status
    assert headers["referrer-policy"] == "no-referrer", status
    assert "frame-ancestors 'none'" in headers["content-security-policy"], status
    assert headers["x-frame-options"] == "DENY", status
    assert headers["cache-control"] == "no-store", status
    assert headers["cross-origin-resource-policy"] == "same-origin", status
    assert not [h for h in headers if h.startswith("access-control-")], headers
    assert b"Traceback" not in body
    if status >= 400:
        # an error is plain text (any markup it names stays text), in a sandbox
        assert headers["content-type"] == "text/plain; charset=utf-8", status
        assert "sandbox" in headers["content-security-policy"], status
        assert SECRET.encode() not in body
        assert len(body) <= 2048


# -- DNS rebinding: only the loopback names of our own port -------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.1.evil.example:{port}",
        "localhost.evil.example:{port}",
        "127.0.0.1:1",  # another port: another origin
        "127.0.0.1",  # no port: not the origin the page was loaded from
        "127.0.0.1:{port}@evil.example",
        "127.0.0.1:{port} evil",
        "0.0.0.0:{port}",
        "",  # no Host header at all
    ],
)
@pytest.mark.parametrize("target", ["/", "/api/runs", "/api/run?id=run-1", "/index.html"])
def test_a_foreign_host_header_gets_403_and_no_data(served: Served, host: str, target: str) -> None:
    status, headers, body = served.get(target, host=host.format(port=served.port))
    assert status == 403
    assert b"run-1" not in body
    assert b"planner" not in body
    assert b"mode" not in body
    assert b"Host" in body  # says why
    assert_hardened(status, headers, body)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "[::1]:{port}"]
)
def test_the_loopback_names_of_our_port_are_served(served: Served, host: str) -> None:
    status, headers, body = served.get("/api/runs", host=host.format(port=served.port))
    assert status == 200, body
    assert [r["run_id"] for r in json.loads(body)["runs"]] == ["run-1"]
    assert_hardened(status, headers, body)


def test_two_host_headers_are_refused(served: Served) -> None:
    status, headers, body = served.get("/api/runs", Host="evil.example")
    assert status in (400, 403)
    assert b"run-1" not in body
    assert_hardened(status, headers, body)


# -- cross-origin reads: no CORS, no JSONP, no cross-site API fetches -----------------------


def test_no_cors_grant_even_when_asked(served: Served) -> None:
    status, headers, body = served.get("/api/runs", Origin="https://evil.example")
    assert status == 403
    assert b"run-1" not in body
    assert_hardened(status, headers, body)
    status, headers, body = served.get("/api/runs", Origin=f"http://localhost:{served.port}")
    assert status == 200
    assert_hardened(status, headers, body)
    status, headers, body = served.get(
        "/api/runs",
        method="OPTIONS",
        Origin="https://evil.example",
        Access_Control_Request_Method="GET",
    )
    assert status == 405
    assert_hardened(status, headers, body)


def test_no_jsonp(served: Served) -> None:
    for param in ("callback", "jsonp", "cb"):
        status, headers, body = served.get(f"/api/runs?{param}=alert")
        assert status == 400, param
        assert b"alert(" not in body
        assert_hardened(status, headers, body)


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_an_api_fetch_from_another_site_is_refused(served: Served, site: str) -> None:
    status, headers, body = served.get("/api/run?id=run-1", Sec_Fetch_Site=site)
    assert status == 403
    assert b"run-1" not in body
    assert_hardened(status, headers, body)


@pytest.mark.parametrize("site", ["same-origin", "none"])
def test_the_page_and_its_own_fetches_are_served(served: Served, site: str) -> None:
    status, _, body = served.get("/api/run?id=run-1", Sec_Fetch_Site=site)
    assert status == 200, body
    # a navigation from another site still gets the page (it holds no data)
    status, headers, body = served.get("/", Sec_Fetch_Site="cross-site")
    assert status == 200
    assert_hardened(status, headers, body)


def test_the_page_only_runs_its_own_script(served: Served) -> None:
    status, headers, _body = served.get("/")
    assert status == 200
    csp = headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src
    assert "'sha256-" in script_src
    for directive in ("default-src 'none'", "base-uri 'none'", "form-action 'none'"):
        assert directive in csp
    assert headers["content-type"] == "text/html; charset=utf-8"


def test_api_answers_are_json_never_html(served: Served) -> None:
    status, headers, body = served.get("/api/record?id=run-1&seq=1")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["record"]["state"]["html"] == HOSTILE
    assert_hardened(status, headers, body)


# -- request targets: 4xx, never a file, never a traceback -----------------------------------

BAD_TARGETS = [
    ("/../etc/passwd", 404),
    ("/%2e%2e/%2e%2e/etc/passwd", 404),
    ("/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", 404),
    ("/..%5c..%5cwindows", 404),
    ("//etc/passwd", 404),  # http.server reads a leading // as / (gh-87389)
    ("//evil.example/api/runs", 404),
    ("http://evil.example/api/runs", 400),
    ("http://127.0.0.1/", 400),
    ("*", 400),
    ("api/runs", 400),
    ("/api/runs/", 404),
    ("/API/RUNS", 404),
    ("/api/%72uns", 404),
    ("/api/runs;x", 404),
    ("/api/runs/..", 404),
    ("/index.html/..", 404),
    ("/api/run?id=run-1&id=run-2", 400),
    ("/api/run", 400),
    ("/api/run?id", 400),
    ("/api/run?id=", 400),
    ("/api/run?=run-1", 400),
    ("/api/run?id=run-1&&", 400),
    ("/api/run?id=run-1&extra=1", 400),
    ("/api/run?id=..%2F..%2Fetc%2Fpasswd", 400),
    ("/api/run?id=%2Fetc%2Fpasswd", 400),
    ("/api/run?id=run-1%00", 400),
    ("/api/run?id=%ff%fe", 400),
    ("/api/run?id=%C0%AE%C0%AE", 400),
    ("/api/runs?agent=%ff", 400),
    ("/api/runs?agent=a%00b", 400),
    ("/api/runs?agent=a%0d%0aSet-Cookie:x", 400),
    ("/api/runs?status=running&status=failed", 400),
    ("/api/record?id=run-1", 400),
    ("/api/record?seq=1", 400),
    ("/api/record?id=run-1&seq=%C2%B2", 400),  # "²": a digit to str.isdigit, not to int
    ("/api/record?id=run-1&seq=%D9%A1", 400),  # Arabic-Indic 1
    ("/api/record?id=run-1&seq=" + "9" * 5000, 400),
    ("/api/record?id=run-1&seq=1e3", 400),
    ("/api/record?id=run-1&seq=+1", 400),
    ("/api/runs?page=%00", 400),
    ("/api/runs?page=garbage", 400),
    ("/api/runs?page=" + "QUFB" * 1000, 400),
    ("/api/runs?since=" + "9" * 3000, 400),
    ("/api/runs?since=0001-01-01T00:00:00%2B14:00", 400),  # before year 1 in UTC
    ("/api/runs?until=9999-12-31T23:59:59-14:00", 400),  # after 9999 in UTC
    ("/api/runs?since=2026-13-01T00:00:00Z", 400),
    ("/api/runs?x=" + "a" * 20_000, 414),
    ("/" + "a" * 70_000, 414),
]


@pytest.mark.parametrize(("target", "status"), BAD_TARGETS, ids=lambda v: str(v)[:40])
def test_hostile_request_targets_are_refused(served: Served, target: str, status: int) -> None:
    got, headers, body = served.get(target)
    assert got == status, body[:300]
    assert b"root:" not in body
    assert_hardened(got, headers, body)


@pytest.mark.parametrize(
    "target", [b"/api/run?id=run-1\x00", b"/\x00/etc/passwd", b"/api/run?id=\xff", b"/a b"]
)
def test_raw_bytes_in_the_target_are_refused(served: Served, target: bytes) -> None:
    got, headers, body = served.get(target)
    assert got == 400, body
    assert_hardened(got, headers, body)


@pytest.mark.parametrize(
    "request_line",
    [b"GET / HTTP/9.9", b"GET / HTTP/1.1 extra", b"GET /", b"\x16\x03\x01\x02\x00", b"GET"],
    ids=["version", "words", "http09", "tls", "bare"],
)
def test_malformed_requests_get_a_hardened_error_and_no_data(
    served: Served, request_line: bytes
) -> None:
    host = f"Host: 127.0.0.1:{served.port}".encode()
    status, headers, body = served.raw(request_line + b"\r\n" + host + b"\r\n\r\n")
    assert status in (400, 505), body
    assert b"mode" not in body
    assert b"run-1" not in body
    assert_hardened(status, headers, body)


def test_too_many_headers_get_a_hardened_431(served: Served) -> None:
    many = {f"X_{i}": "y" for i in range(150)}
    status, headers, body = served.get("/api/runs", **many)
    assert status == 431
    assert_hardened(status, headers, body)


# -- methods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "BREW", "M-SEARCH"]
)
@pytest.mark.parametrize("target", ["/", "/api/runs", "/nowhere"])
def test_every_method_but_get_and_head_is_405(served: Served, method: str, target: str) -> None:
    status, headers, body = served.get(target, method=method, Content_Length="0")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert b"run-1" not in body
    assert b"mode" not in body
    assert_hardened(status, headers, body)


def test_connect_to_another_port_is_405(served: Served) -> None:
    status, headers, _ = served.get("127.0.0.1:22", method="CONNECT")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_trace_does_not_echo_the_request(served: Served) -> None:
    status, _, body = served.get("/", method="TRACE", Cookie="session=c00kie")
    assert status == 405
    assert b"c00kie" not in body


@pytest.mark.parametrize(
    ("target", "status"),
    [("/", 200), ("/api/runs", 200), ("/nowhere", 404), ("/api/run?id=..", 400)],
)
def test_head_answers_have_no_body(served: Served, target: str, status: int) -> None:
    got, headers, body = served.get(target, method="HEAD")
    assert got == status
    assert body == b""
    assert int(headers["content-length"]) > 0
    assert_hardened(got, headers, body)


def test_a_silent_client_is_dropped(tmp_path: Path) -> None:
    """A connection that never finishes its request does not hold a thread forever."""
    for served in serve(make_archive(tmp_path).as_uri(), request_timeout=0.5):
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
            sock.sendall(b"GET /api/runs HTTP/1.1\r\n")
            assert sock.recv(1024) == b""  # closed by the server, long before 30 s
        status, _, _ = served.get("/api/runs")
        assert status == 200


# -- a hostile bucket -----------------------------------------------------------------


def _craft_manifest(root: Path, craft: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``craft`` to the victim's entry in every manifest object that holds it
    (a done shard, and the live object's recently ended runs), re-compressed."""
    crafted = 0
    for path in root.glob("manifest/*/**/*.json.zst"):
        doc = orjson.loads(zstandard.ZstdDecompressor().decompress(path.read_bytes()))
        for part in ("runs", "ended"):
            entries = doc.get(part)
            if isinstance(entries, dict) and VICTIM in entries:
                craft(entries)
                crafted += 1
        path.write_bytes(zstandard.ZstdCompressor().compress(orjson.dumps(doc)))
    assert crafted, "no manifest object holds the victim"


@pytest.fixture
def hostile_root(tmp_path: Path) -> Path:
    return make_archive(tmp_path)


def test_hostile_names_in_the_runs_table_are_json_strings(hostile_root: Path) -> None:
    _craft_manifest(hostile_root, lambda runs: runs[VICTIM].update(agent=HOSTILE))
    for served in serve(hostile_root.as_uri()):
        status, headers, body = served.get("/api/runs")
        assert status == 200, body
        assert_hardened(status, headers, body)
        assert HOSTILE in [r["agent"] for r in json.loads(body)["runs"]]
        assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("bad_id", ["../../outside", "<script>x</script>", "a/b", "x" * 5000])
def test_a_crafted_run_id_in_the_manifest_never_reaches_the_reader(
    hostile_root: Path, bad_id: str
) -> None:
    _craft_manifest(
        hostile_root, lambda runs: runs.update({bad_id: {**runs[VICTIM], "run_id": bad_id}})
    )
    for served in serve(hostile_root.as_uri()):
        status, headers, body = served.get("/api/runs")
        # listed as a JSON string: the table shows it as text
        assert status == 200, body[:300]
        assert bad_id in [r["run_id"] for r in json.loads(body)["runs"]]
        assert_hardened(status, headers, body)
        # the page links to #/run/<id>: following it asks the API for that id
        quoted = bad_id.replace("/", "%2F").replace("<", "%3C").replace(">", "%3E")
        status, headers, body = served.get(f"/api/run?id={quoted}")
        assert status == 400
        assert_hardened(status, headers, body)
        assert bad_id not in [run_id for _, run_id in served.calls]


CRAFTED_INDEXES = {
    "climbing_run_id": lambda doc: {**doc, "run_id": "../../../outside/x"},
    "script_run_id": lambda doc: {**doc, "run_id": "<script>alert(1)</script>"},
    "wrong_types": lambda doc: {**doc, "segments": "<img src=x onerror=alert(1)>", "last_seq": "x"},
    "not_an_object": lambda doc: ["<script>"],
    "huge_agent": lambda doc: {**doc, "agent": "<b>" * 2_000_000},
    "huge_metadata": lambda doc: {**doc, "metadata": {"blob": "<i>" * 4_000_000}},
    "deep_metadata": lambda doc: {**doc, "metadata": {"deep": "DEEP"}},
}


def _write_crafted(root: Path, doc: Any) -> None:
    # json.dumps cannot write 1,000 nested lists (its recursion limit): splice them in
    text = json.dumps(doc).replace('"DEEP"', "[" * 1000 + "]" * 1000)
    (root / "runs" / VICTIM / "index.json").write_text(text)


@pytest.mark.parametrize("craft", list(CRAFTED_INDEXES), ids=str)
def test_a_crafted_index_is_an_error_answer_not_a_crash(hostile_root: Path, craft: str) -> None:
    doc = read_index(hostile_root, VICTIM)
    _write_crafted(hostile_root, CRAFTED_INDEXES[craft](doc))
    for served in serve(hostile_root.as_uri()):
        for target in (f"/api/run?id={VICTIM}", f"/api/record?id={VICTIM}&seq=1"):
            status, headers, body = served.get(target)
            assert status in (200, 502), body[:300]
            assert_hardened(status, headers, body)
            assert len(body) < 64 << 20
            if status == 502:
                assert b"corrupt" in body or b"cannot" in body, body[:300]
        # the server still serves the sound run
        status, _, body = served.get(f"/api/run?id={OTHER}")
        assert status == 200, body[:300]


def _replace_segment(root: Path, raw_frame: bytes, **ref_fields: Any) -> None:
    doc = read_index(root, VICTIM)
    ref = doc["segments"][0]
    (root / ref["key"]).write_bytes(raw_frame)
    ref.update(ref_fields)
    write_index(root, VICTIM, doc)


def test_a_zstd_bomb_segment_is_refused_without_blowing_memory(hostile_root: Path) -> None:
    size = 1 << 30  # 1 GiB of zeros in ~40 KB
    comp = zstandard.ZstdCompressor(level=1).compressobj(size=size)
    chunk = bytes(16 << 20)
    bomb = b"".join(comp.compress(chunk) for _ in range(size // len(chunk))) + comp.flush()
    _replace_segment(hostile_root, bomb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for served in serve(hostile_root.as_uri()):
        status, headers, body = served.get(f"/api/run?id={VICTIM}")
        assert status == 502, body[:300]
        assert_hardened(status, headers, body)
        assert b"corrupt" in body
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"\nzstd bomb (1 GiB of zeros): peak memory grew {grown_mib:.0f} MiB")
    assert grown_mib < 256, f"peak memory grew by {grown_mib:.0f} MiB"


def test_a_50_mb_record_is_not_sent_whole(tmp_path: Path) -> None:
    url = (tmp_path / "bucket").as_uri()
    archive = Archive.open(url, cache_dir=tmp_path / "c", policy=Policy(keep_all=True))
    with archive, archive.start_run(agent="big", run_id="run-big") as run:
        run.checkpoint("plan", {"blob": "<" * (50 << 20)})
        run.checkpoint("plan", {"blob": "small"})
    for served in serve(url):
        status, headers, body = served.get("/api/run?id=run-big")
        assert status == 200
        assert len(body) < 1 << 20  # the timeline holds no state
        status, headers, body = served.get("/api/record?id=run-big&seq=1")
        assert status == 413, body[:300]
        assert b"50.0 MiB" in body
        assert b"`runarchive restore run-big --seq 1 --json`" in body
        assert_hardened(status, headers, body)
        status, _, body = served.get("/api/record?id=run-big&seq=2")
        assert status == 200
        assert len(body) < 1 << 20


def test_a_flood_of_idle_connections_gets_503_not_a_thread_each(tmp_path: Path) -> None:
    for served in serve(make_archive(tmp_path).as_uri(), max_connections=2):
        idle = [socket.create_connection(("127.0.0.1", served.port), timeout=30) for _ in "ab"]
        try:
            for sock in idle:
                sock.sendall(b"GET /api/runs HTTP/1.1\r\n")  # and never finishes
            status, headers, body = served.get("/api/runs")
            assert status == 503
            assert b"too many connections" in body
            assert headers["retry-after"] == "1"
            assert_hardened(status, headers, body)
        finally:
            for sock in idle:
                sock.close()
        # Their threads see the close and free their slots: served again.
        for _ in range(600):  # 30 s at most: a thread that never frees its slot fails
            if (status := served.get("/api/runs")[0]) != 503:
                break
            threading.Event().wait(0.05)
        assert status == 200


def test_random_targets_never_crash_the_server(served: Served) -> None:
    """300 seeded random request targets built from the routes and hostile pieces:
    every one gets an answer (no dropped connection), hardened, and none is a 5xx."""
    rng = random.Random(15)
    pieces = [
        "/",
        "/api/",
        "run",
        "runs",
        "record",
        "?",
        "&",
        "=",
        "id",
        "seq",
        "status",
        "agent",
        "since",
        "until",
        "page",
        "run-1",
        "..",
        "%2e",
        "%2F",
        "%00",
        "%ff",
        "%C0%AE",
        "%E2%80%A8",
        "%",
        "%%",
        "+",
        "#",
        ";",
        "\\",
        "1",
        "-1",
        "99999999999",
        "completed",
        "2026-01-01T00:00:00Z",
        "%3Cscript%3E",
        "~",
        "*",
        "index.html",
    ]
    for _ in range(300):
        target = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        status, headers, body = served.get(target)
        assert 200 <= status < 500, (target, status, body[:200])
        assert_hardened(status, headers, body)


def test_the_pages_csp_allows_exactly_its_own_scripts() -> None:
    page = render_page({"mode": "report", "runs": {"runs": [], "next_page": None}})
    (meta,) = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    (script_src,) = [d.strip() for d in meta.split(";") if d.strip().startswith("script-src")]
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    code = [body for attrs, body in scripts if "application/json" not in attrs]
    assert len(code) == len(scripts) - 1  # the data block is not a script
    digests = {base64.b64encode(hashlib.sha256(c.encode()).digest()).decode() for c in code}
    assert set(script_src.split()[1:]) == {f"'sha256-{d}'" for d in digests}
