"""A fault-injecting HTTP proxy on 127.0.0.1 in front of a real S3 endpoint.

Point boto3 at :attr:`FaultProxy.endpoint_url`. Requests are forwarded byte for
byte (same method, path, headers — the ``Host`` header as received, so the SigV4
signature made for the proxy's address stays valid — and body). At ``rate`` a
request is not served normally but gets one fault; the kinds are taken in turn
from a seeded shuffle of ``kinds``, so every kind is injected once ``len(kinds)``
faults have fired, and a run with the same seed and request order repeats itself:

* ``500``       an ``InternalError`` XML answer, request not forwarded
* ``503``       a ``SlowDown`` XML answer, request not forwarded
* ``reset``     the request is read, then the socket is reset (RST), nothing forwarded
* ``timeout``   the request is read and held for ``hold_seconds`` (longer than the
                client's read timeout), then the connection is closed, nothing forwarded
* ``truncated`` forwarded; the answer is cut: headers with the full ``Content-Length``
                and half of the body (or half of the header block when there is no
                body), then the connection is closed
* ``lost``      forwarded and answered upstream (the write happened); the answer is
                dropped and the connection closed: the client sees an error
* ``412``       a ``PreconditionFailed`` XML answer, request not forwarded (a proxy or
                a buggy gateway that claims a conditional write lost)
* ``unstored``  a PUT is answered ``200`` with the ETag its body would have (MD5),
                and not forwarded: the write is acknowledged and never stored (a lying
                network); other methods are forwarded as usual

:attr:`counts` counts injections per kind; :meth:`set_rate` changes the rate (0 to
stop) at any time. Object bodies are never logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlparse

KINDS = ("500", "503", "reset", "timeout", "truncated", "lost", "412", "unstored")
# The kinds injected when a test names none: the transient ones a retry fixes.
TRANSIENT = ("500", "503", "reset", "timeout", "truncated", "lost")

_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message>"
    "<RequestId>faultproxy</RequestId></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "expect", "transfer-encoding"}


class FaultProxy:
    """A threaded proxy to ``upstream`` (``http://host:port``) that injects faults."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        kinds: tuple[str, ...] = TRANSIENT,
        seed: int = 0,
        hold_seconds: float = 2.5,
    ) -> None:
        parsed = urlparse(upstream)
        assert parsed.hostname, upstream
        assert parsed.port, upstream
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.hold_seconds = hold_seconds
        self.counts: Counter[str] = Counter()
        self.hits: Counter[tuple[str, str]] = Counter()  # (kind, "PUT index") -> n
        self.requests = 0  # requests received
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rate = 0.0
        self._kinds: list[str] = []
        self._turn = 0
        self._only: Callable[[str, str], bool] | None = None
        self._budget: int | None = None
        self._stopping = threading.Event()
        self.set_rate(rate, kinds)
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="faultproxy", daemon=True
        )

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def set_rate(
        self,
        rate: float,
        kinds: tuple[str, ...] | None = None,
        *,
        only: Callable[[str, str], bool] | None = None,
        budget: int | None = None,
    ) -> None:
        """Inject a fault into this fraction of requests from now on (0 stops).

        ``only(method, path)`` restricts faults to the requests it accepts;
        ``budget`` stops injecting after that many faults.
        """
        assert 0.0 <= rate <= 1.0
        with self._lock:
            self._rate = rate
            self._only, self._budget = only, budget
            if kinds is not None:
                unknown = set(kinds) - set(KINDS)
                assert not unknown, f"unknown fault kinds {unknown}"
                self._kinds = list(kinds)
                self._rng.shuffle(self._kinds)
                self._turn = 0

    def choose(self, method: str, path: str) -> str | None:
        """The fault for the next request, or ``None`` to serve it normally."""
        with self._lock:
            self.requests += 1
            if not self._kinds or self._budget == 0:
                return None
            if self._only is not None and not self._only(method, path):
                return None
            if self._rng.random() >= self._rate:
                return None
            kind = self._kinds[self._turn % len(self._kinds)]
            self._turn += 1
            self.counts[kind] += 1
            self.hits[(kind, f"{method} {what(path)}")] += 1
            if self._budget is not None:
                self._budget -= 1
            return kind

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def what(path: str) -> str:
    """The kind of object a request path names (for reports)."""
    if "/seg/" in path:
        return "segment"
    if path.split("?", maxsplit=1)[0].endswith("/index.json"):
        return "index"
    if "/manifest/" in path:
        return "manifest"
    if "/_runarchive/probe/" in path:
        return "probe"
    return "other"


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's pool expects

    def log_message(self, format: str, *args: object) -> None:
        return  # silent: never log requests (they carry signatures)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._body()
        fault = self.owner.choose(self.command, self.path)
        if fault == "unstored" and self.command != "PUT":
            fault = None
        if fault == "unstored":
            etag = '"' + hashlib.md5(body).hexdigest() + '"'
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault in ("500", "503", "412"):
            code, message = {
                "500": ("InternalError", "injected internal error"),
                "503": ("SlowDown", "injected slow down"),
                "412": ("PreconditionFailed", "injected precondition failure"),
            }[fault]
            xml = _ERROR_XML.format(code=code, message=message).encode()
            self.send_response(int(fault))
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            self.wfile.write(xml)
            return
        if fault == "reset":
            self._reset()
            return
        if fault == "timeout":
            self.owner._stopping.wait(self.owner.hold_seconds)
            self.close_connection = True
            return
        status, reason, headers, data = self._forward(body)
        if fault == "lost":
            self._reset()
            return
        head = [f"HTTP/1.1 {status} {reason}\r\n"]
        no_body = self.command == "HEAD" or status in (204, 304) or status < 200
        for name, value in headers:
            if name.lower() in _HOP_BY_HOP or (name.lower() == "content-length" and not no_body):
                continue
            head.append(f"{name}: {value}\r\n")
        if not no_body:
            head.append(f"Content-Length: {len(data)}\r\n")
        head.append("\r\n")
        raw_head = "".join(head).encode("latin-1")
        if fault == "truncated":
            if data and not no_body:
                self.wfile.write(raw_head + data[: len(data) // 2])
            else:
                self.wfile.write(raw_head[: len(raw_head) // 2])
            self.wfile.flush()
            self._reset()
            return
        self.wfile.write(raw_head + (b"" if no_body else data))

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(
            self.owner.upstream_host, self.owner.upstream_port, timeout=60
        )
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() in _HOP_BY_HOP:
                    continue
                conn.putheader(name, value)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _reset(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _dispatch(self) -> None:
        try:
            self._serve()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _dispatch
