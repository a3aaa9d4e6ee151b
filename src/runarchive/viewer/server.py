"""The read-only HTTP server of ``runarchive ui``: the page and three JSON routes.

Standard library only (``http.server``): GET and HEAD on fixed routes; any other
method is refused with 405 and any other path with 404. Only requests whose Host is
a loopback name with our port are answered (a DNS-rebinding page gets 403), the API
only to the page's own origin; every answer, errors included, carries the same
hardening headers (docs/viewer.md, Security). Run ids come from the query string,
are checked with ``validate_run_id`` and are only ever passed to the reader (never
joined to a path). Nothing here writes.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import BoundedSemaphore, Lock
from typing import Any, Protocol
from urllib.parse import parse_qsl

from runarchive.compliance.verify import VerifyReport
from runarchive.engine.manifest.core import RunEntry, RunList
from runarchive.errors import (
    InvalidInputError,
    KeyUnavailableError,
    RunArchiveError,
    RunNotFoundError,
)
from runarchive.format.model import Checkpoint, Event, RunIndex, RunStatus, validate_run_id
from runarchive.viewer.data import (
    previous_checkpoint,
    record_page,
    runs_page,
    timeline,
    verify_summary,
)
from runarchive.viewer.render import render_page, script_hashes

PAGE_SIZE = 100  # runs per page: the manifest is read a page at a time
MiB = 1 << 20
REQUEST_TIMEOUT = 30.0  # seconds a client may take to send a request
MAX_RECORD_ANSWER = 16 * MiB  # a larger record would stall the page's JSON tree
MAX_TARGET = 8192  # characters of a request target: ids are <= 128, page tokens ~ 200
MAX_ERROR = 1000  # characters of an error message: an echoed field is cut
MAX_CONNECTIONS = 32  # served at once; a browser opens 6 per host
_STATUSES = ("running", "completed", "failed")
_SEQ_RE = re.compile(r"[0-9]{1,18}")
# The page runs only its own inline scripts (by hash); nothing else is allowed to load,
# no form posts, no <base>, no framing (clickjacking). JSON and errors: nothing at all.
_PAGE_CSP = (
    "default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; img-src data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_DATA_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)


class Source(Protocol):
    """What the server reads: :class:`runarchive.Reader` is one."""

    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 1000,
        page: str | None = None,
    ) -> RunList: ...

    def index(self, run_id: str, *, decrypt: bool = True) -> RunIndex: ...

    def iter_records(self, run_id: str) -> Iterator[Checkpoint | Event]: ...

    def verify(self, run_id: str) -> VerifyReport: ...

    def interrupted(self) -> list[RunEntry]: ...


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Viewer:
    """The answers of the JSON routes, from ``source``. Keeps the records of the last
    few runs read (keyed by their chain head) so a record page does not re-read them."""

    def __init__(self, source: Source, *, cached_runs: int = 4) -> None:
        self.source = source
        self._records: OrderedDict[tuple[str, str | None, int], list[Checkpoint | Event]]
        self._records = OrderedDict()
        self._cached_runs = cached_runs
        self._lock = Lock()

    def _load(self, run_id: str) -> tuple[RunIndex, list[Checkpoint | Event]]:
        index = self.source.index(run_id)
        key = (run_id, index.chain_head, index.last_seq)
        with self._lock:
            cached = self._records.get(key)
            if cached is not None:
                self._records.move_to_end(key)
                return index, cached
        records = list(self.source.iter_records(run_id))
        with self._lock:
            self._records[key] = records
            while len(self._records) > self._cached_runs:
                self._records.popitem(last=False)
        return index, records

    def runs(self, query: dict[str, str]) -> dict[str, Any]:
        """A page of runs, filtered by ``status``, ``agent``, ``since``, ``until``."""
        status = query.get("status") or None
        if status is not None and status not in _STATUSES:
            raise InvalidInputError(f"status must be one of {', '.join(_STATUSES)}")
        entries = self.source.list_runs(
            status=status,  # type: ignore[arg-type]  # checked above
            agent=query.get("agent") or None,
            since=_time(query.get("since")),
            until=_time(query.get("until")),
            limit=PAGE_SIZE,
            page=query.get("page") or None,
        )
        stale = [e.run_id for e in self.source.interrupted()] if not query.get("page") else []
        return runs_page(entries, next_page=entries.next_page, interrupted=stale)

    def run(self, run_id: str) -> dict[str, Any]:
        """A run's page: its timeline and what ``verify`` finds. A run whose key is
        missing shows what its index shows sealed, and names the key."""
        validate_run_id(run_id)
        try:
            index, records = self._load(run_id)
        except KeyUnavailableError as exc:
            page = timeline(self.source.index(run_id, decrypt=False), [])
            page["missing_key"] = f"encrypted run: configure key {exc.key_id} to open it ({exc})"
            return page
        page = timeline(index, records)
        page["verify"] = verify_summary(self.source.verify(run_id))
        return page

    def record(self, run_id: str, seq_text: str) -> dict[str, Any]:
        """A record's page: its JSON and its diff against the previous checkpoint."""
        validate_run_id(run_id)
        if not _SEQ_RE.fullmatch(seq_text):  # not isdigit(): "²" is a digit to it
            raise InvalidInputError(f"seq must be a positive integer, not {_cut(seq_text, 40)!r}")
        _, records = self._load(run_id)
        found, previous = previous_checkpoint(records, int(seq_text))
        if found is None:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"run {run_id} has no record {seq_text}")
        return record_page(found, previous)


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(f"not an ISO 8601 time: {text!r}") from None
    if ts.tzinfo is None:
        example = f"{text}Z" if "T" in text else f"{text}T00:00:00Z"
        raise InvalidInputError(f"give a timezone, e.g. {example}")
    try:
        return ts.astimezone(UTC)  # the listing compares in UTC
    except OverflowError:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise InvalidInputError(f"time out of range: {text!r}") from None


def _query(text: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string's parameters: each of ``allowed`` at most once, UTF-8, no
    control characters. Anything else is refused, never guessed at."""
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            errors="strict",
            max_num_fields=len(allowed),
        )
    except ValueError:  # UnicodeDecodeError too
        raise InvalidInputError(
            f"malformed query string: use name=value pairs of {', '.join(allowed)} "
            "joined by &, percent-encoded UTF-8"
        ) from None
    query: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise InvalidInputError(
                f"unknown parameter {_cut(name, 64)!r}: this route takes {', '.join(allowed)}"
            )
        if name in query:
            raise InvalidInputError(f"parameter {name} given twice: give it once")
        if not value.isprintable():
            raise InvalidInputError(f"parameter {name} holds control characters")
        query[name] = value
    return query


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def _answer_of(route: str, exc: Exception) -> tuple[HTTPStatus, str]:
    """The status and message of a failed route; the message never holds record data
    (the archive's errors name objects and runs, not their content)."""
    if isinstance(exc, _HTTPError):
        return exc.status, str(exc)
    if isinstance(exc, RunNotFoundError):
        return HTTPStatus.NOT_FOUND, str(exc)
    if isinstance(exc, InvalidInputError):
        return HTTPStatus.BAD_REQUEST, str(exc)
    if isinstance(exc, KeyUnavailableError):  # names the key to configure
        return HTTPStatus.FORBIDDEN, str(exc)
    if isinstance(exc, RunArchiveError):
        return HTTPStatus.BAD_GATEWAY, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, RecursionError):
        return HTTPStatus.BAD_GATEWAY, (
            "cannot show this: its JSON is nested too deeply for the viewer; read it with "
            "`runarchive show RUN --json` (the run's index) or `runarchive restore RUN --json`"
        )
    # A bug of ours: name it, show nothing of what was being read.
    return HTTPStatus.INTERNAL_SERVER_ERROR, (
        f"runarchive ui failed on {route} ({type(exc).__name__}): a bug; please report it"
    )


def make_handler(
    viewer: Viewer,
    *,
    request_timeout: float = REQUEST_TIMEOUT,
    max_record_bytes: int = MAX_RECORD_ANSWER,
) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``viewer``. ``request_timeout``: seconds a
    client may take to send its request; ``max_record_bytes``: the largest record
    answer (a larger record is refused with 413, saying how to read it)."""
    page_text = render_page({"mode": "server"})
    page = page_text.encode()
    page_csp = _PAGE_CSP.format(scripts=" ".join(script_hashes(page_text)))

    def record(q: dict[str, str]) -> dict[str, Any]:
        return viewer.record(q.get("id", ""), q.get("seq", ""))

    routes: dict[str, tuple[tuple[str, ...], Callable[[dict[str, str]], dict[str, Any]]]] = {
        "/api/runs": (("status", "agent", "since", "until", "page"), viewer.runs),
        "/api/run": (("id",), lambda q: viewer.run(q.get("id", ""))),
        "/api/record": (("id", "seq"), record),
    }

    class Handler(BaseHTTPRequestHandler):
        server_version = "runarchive-ui"
        timeout = request_timeout  # a client that never finishes its request is dropped

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def __getattr__(self, name: str) -> Callable[[], None]:
            # Every other method (POST, PUT, DELETE, PATCH, any made-up one): 405.
            if name.startswith("do_"):
                return self._refuse
            raise AttributeError(name)

        def version_string(self) -> str:
            return self.server_version  # not the Python version

        def _refuse(self) -> None:
            self.close_connection = True  # its body, if any, is not read
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "read-only: GET and HEAD only", True)

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            # The standard library's own refusals (a malformed request line, a 414, too
            # many headers): plain text with the same headers as ours, not its HTML page.
            self.close_connection = True
            status = HTTPStatus(code)
            self._error(status, message or status.phrase, self.command != "HEAD")

        def _bound(self) -> tuple[str, int]:
            address = self.server.server_address
            assert isinstance(address, tuple)  # an IP socket, not a Unix one
            return str(address[0]), int(address[1])

        def _allowed_hosts(self) -> set[str]:
            host, port = self._bound()
            bound = f"[{host}]" if ":" in host else host
            return {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]", bound)}

        def _refusal(self) -> tuple[HTTPStatus, str] | None:
            """Why this request is refused before any route runs, if it is."""
            if self.request_version == "HTTP/0.9":
                return HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not served: use HTTP/1.0 or 1.1"
            hosts = self._allowed_hosts()
            given = self.headers.get_all("Host") or []
            if len(given) != 1 or given[0].strip().lower() not in hosts:
                # A page on another name that resolves to 127.0.0.1 (DNS rebinding)
                # sends its own name: it gets nothing.
                shown = (
                    _cut(repr(given[0]), 80) if len(given) == 1 else f"{len(given)} Host headers"
                )
                port = self._bound()[1]
                return HTTPStatus.FORBIDDEN, (
                    f"refused: Host {shown} is not this server; open http://127.0.0.1:{port}/ "
                    "(a page under another name reaching this port may be a DNS-rebinding attack)"
                )
            target = self.path
            if len(target) > MAX_TARGET:
                return (
                    HTTPStatus.REQUEST_URI_TOO_LONG,
                    f"request target over {MAX_TARGET:,} characters",
                )
            if not target.startswith("/") or not all("!" <= c <= "~" for c in target):
                return HTTPStatus.BAD_REQUEST, (
                    "the request target must be a path (/...) of printable ASCII, percent-encoded"
                )
            if target.startswith("/api/"):
                # Another site's page may send a request here but must not read it (no
                # CORS); refusing it outright also keeps it from timing our answers.
                site = self.headers.get("Sec-Fetch-Site")
                origin = self.headers.get("Origin")
                if site not in (None, "same-origin", "none") or (
                    origin is not None and origin.lower() not in {f"http://{h}" for h in hosts}
                ):
                    return HTTPStatus.FORBIDDEN, (
                        "refused: the API answers only the viewer's own page, not another site"
                    )
            return None

        def _answer(self, *, send_body: bool) -> None:
            refused = self._refusal()
            if refused is not None:
                self.close_connection = True
                self._error(*refused, send_body)
                return
            path, _, query_text = self.path.partition("?")
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8", send_body, page_csp)
                return
            found = routes.get(path)
            if found is None:
                self._error(HTTPStatus.NOT_FOUND, f"no such page: {_cut(path, 200)}", send_body)
                return
            allowed, route = found
            try:
                query = _query(query_text, allowed)
                body = json.dumps(route(query)).encode()
                if path == "/api/record" and len(body) > max_record_bytes:
                    rid, seq = query["id"], query["seq"]
                    raise _HTTPError(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"record {seq} of run {rid} is {len(body) / MiB:,.1f} MiB of JSON, over "
                        f"the viewer's {max_record_bytes / MiB:,.0f} MiB: read it with "
                        f"`runarchive restore {rid} --seq {seq} --json`",
                    )
            except Exception as exc:
                self._error(*_answer_of(path, exc), send_body)
            else:
                self._send(HTTPStatus.OK, body, "application/json", send_body)

        def _error(self, status: HTTPStatus, message: str, send_body: bool) -> None:
            body = (_cut(message, MAX_ERROR) + "\n").encode("utf-8", "replace")
            self._send(status, body, "text/plain; charset=utf-8", send_body)

        def _send(
            self,
            status: HTTPStatus,
            body: bytes,
            content_type: str,
            send_body: bool,
            csp: str = _DATA_CSP,
        ) -> None:
            if self.request_version == "HTTP/0.9":
                # An HTTP/0.9 answer has no status line or headers: refused with both.
                self.request_version = "HTTP/1.0"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in _HEADERS:
                self.send_header(name, value)
            self.send_header("Content-Security-Policy", csp)
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                self.send_header("Allow", "GET, HEAD")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log: query strings name runs, and stderr is the user's

    return Handler


_BUSY_BODY = b"too many connections at once: try again in a moment\n"
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    + f"Content-Length: {len(_BUSY_BODY)}\r\nConnection: close\r\nRetry-After: 1\r\n".encode()
    + "".join(f"{name}: {value}\r\n" for name, value in _HEADERS).encode()
    + f"Content-Security-Policy: {_DATA_CSP}\r\n\r\n".encode()
    + _BUSY_BODY
)


class _Server(ThreadingHTTPServer):
    """At most ``max_connections`` connections served at once, a thread each; one more
    gets 503 at once and is closed, so a flood of idle connections cannot pile up
    threads (each is dropped after ``request_timeout`` anyway)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int) -> None:
        super().__init__(address, handler)
        self._slots = BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Read (a little of) the request first: closing a socket with unread data
            # resets it, and the client could lose the answer. This holds the accept
            # loop 0.2 s at most, which only slows the flood down.
            with contextlib.suppress(OSError):
                request.settimeout(0.2)
                request.recv(65536)
            with contextlib.suppress(OSError):  # it went away: nothing to tell it
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started: it would never release
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(
    source: Source,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    request_timeout: float = REQUEST_TIMEOUT,
    max_record_bytes: int = MAX_RECORD_ANSWER,
    max_connections: int = MAX_CONNECTIONS,
) -> ThreadingHTTPServer:
    """A server of ``source`` on ``host:port`` (port 0: any free one), not yet serving:
    call ``serve_forever()``; ``server.server_address`` is where it listens. It answers
    only requests whose Host is a loopback name (or ``host``) with its port."""
    handler = make_handler(
        Viewer(source), request_timeout=request_timeout, max_record_bytes=max_record_bytes
    )
    return _Server((host, port), handler, max_connections)


@contextlib.contextmanager
def serving(source: Source, host: str = "127.0.0.1", port: int = 0) -> Iterator[int]:
    """:func:`make_server` answering from a background thread for the ``with`` block;
    yields the port it listens on (``port=0``, the default: any free one). The server is
    shut down and its socket closed on exit. For tests and notebooks; ``runarchive ui``
    serves in the foreground."""
    server = make_server(source, host, port)
    thread = threading.Thread(target=server.serve_forever, name="runarchive-ui", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
