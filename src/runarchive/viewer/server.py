"""The read-only HTTP server of ``runarchive ui``: the page and three JSON routes.

Standard library only (``http.server``): GET and HEAD on fixed routes; any other
method is refused with 405 and any other path with 404. Run ids come from the query
string, are checked with ``validate_run_id`` and are only ever passed to the reader
(never joined to a path). Nothing here writes.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

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
from runarchive.viewer.render import render_page

PAGE_SIZE = 100  # runs per page: the manifest is read a page at a time
_STATUSES = ("running", "completed", "failed")
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
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
        if not seq_text.isdigit():
            raise InvalidInputError(f"seq must be a positive integer, not {seq_text!r}")
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
        raise InvalidInputError(f"give a timezone, e.g. {text}Z")
    return ts


def make_handler(viewer: Viewer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``viewer``."""
    page = render_page({"mode": "server"}).encode()
    routes: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
        "/api/runs": viewer.runs,
        "/api/run": lambda q: viewer.run(q.get("id", "")),
        "/api/record": lambda q: viewer.record(q.get("id", ""), q.get("seq", "")),
    }

    class Handler(BaseHTTPRequestHandler):
        server_version = "runarchive-ui"

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def __getattr__(self, name: str) -> Callable[[], None]:
            # Every other method (POST, PUT, DELETE, PATCH, any made-up one): 405.
            if name.startswith("do_"):
                return self._refuse
            raise AttributeError(name)

        def _refuse(self) -> None:
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"read-only: GET and HEAD only\n",
                "text/plain; charset=utf-8",
                send_body=True,
                allow=True,
            )

        def _answer(self, *, send_body: bool) -> None:
            url = urlsplit(self.path)
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8", send_body=send_body)
                return
            route = routes.get(url.path)
            if route is None:
                self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}", send_body)
                return
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                body = json.dumps(route(query)).encode()
            except _HTTPError as exc:
                self._error(exc.status, str(exc), send_body)
            except RunNotFoundError as exc:
                self._error(HTTPStatus.NOT_FOUND, str(exc), send_body)
            except InvalidInputError as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc), send_body)
            except KeyUnavailableError as exc:  # names the key to configure
                self._error(HTTPStatus.FORBIDDEN, str(exc), send_body)
            except RunArchiveError as exc:
                self._error(HTTPStatus.BAD_GATEWAY, f"{type(exc).__name__}: {exc}", send_body)
            else:
                self._send(HTTPStatus.OK, body, "application/json", send_body=send_body)

        def _error(self, status: HTTPStatus, message: str, send_body: bool) -> None:
            self._send(status, message.encode(), "text/plain; charset=utf-8", send_body=send_body)

        def _send(
            self,
            status: HTTPStatus,
            body: bytes,
            content_type: str,
            *,
            send_body: bool,
            allow: bool = False,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", _CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            if allow:
                self.send_header("Allow", "GET, HEAD")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log: query strings name runs, and stderr is the user's

    return Handler


def make_server(source: Source, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A server of ``source`` on ``host:port`` (port 0: any free one), not yet serving:
    call ``serve_forever()``; ``server.server_address`` is where it listens."""
    server = ThreadingHTTPServer((host, port), make_handler(Viewer(source)))
    server.daemon_threads = True
    return server
