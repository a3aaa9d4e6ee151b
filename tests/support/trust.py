"""Shared helpers of test_trust.py and test_trust_langgraph.py: hosts on one SeaweedFS
bucket, a fresh-host reader, record contents, the in-process CLI, fault filters."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runarchive import Archive, Reader, errors
from runarchive.cli.main import main
from runarchive.format.model import Checkpoint, Event
from runarchive.store import CountingStore
from support.backends import s3_settings, s3_store_for
from support.faultproxy import FaultProxy, what
from support.servers import S3Server

PREFIX = "agents"


class _RunExistsErrorMissing(Exception):
    """Stand-in while ``runarchive.errors.RunExistsError`` does not exist (never raised)."""


def run_exists_error() -> type[Exception]:
    """``runarchive.errors.RunExistsError``, looked up lazily so this module imports today."""
    got = getattr(errors, "RunExistsError", None)
    return got if isinstance(got, type) else _RunExistsErrorMissing


def content(rec: Checkpoint | Event) -> tuple[str, str, Any]:
    """What a record says, without its seq and time: (type, name or kind, state or data)."""
    if isinstance(rec, Checkpoint):
        return ("checkpoint", rec.name, rec.state)
    return ("event", rec.kind, rec.data)


class Hosts:
    """Hosts (archives with their own cache dir and ``host_id``) on one fresh bucket."""

    def __init__(self, server: S3Server, tmp: Path) -> None:
        self.server, self.tmp = server, tmp
        self.bucket = server.make_bucket()
        self.url = server.url(self.bucket, PREFIX)
        self._opened: list[Archive | Reader] = []

    def cache_dir(self, name: str) -> Path:
        return self.tmp / f"cache-{name}"

    def open(
        self,
        name: str,
        *,
        proxy: FaultProxy | None = None,
        counting: bool = False,
        **overrides: Any,
    ) -> Archive:
        """Open host ``name`` (cache dir ``cache-<name>``, ``host_id=name``; opening the
        same name again reopens the same cache). No background flush happens unless a
        test asks for it (``flush_age`` 300 s): flushes are the test's own calls."""
        settings: dict[str, Any] = {
            **s3_settings(self.server),
            "cache_dir": self.cache_dir(name),
            "host_id": name,
            "flush_age": 300.0,
            "max_attempts": 3,
        }
        if proxy is not None:
            settings |= {"endpoint_url": proxy.endpoint_url, "read_timeout": 2.0}
        settings |= overrides
        if counting:
            store = CountingStore(s3_store_for(self.server, self.bucket, PREFIX))
            archive = Archive.open(self.url, store=store, **settings)
        else:
            archive = Archive.open(self.url, **settings)
        self._opened.append(archive)
        return archive

    def reader(self) -> Reader:
        """A fresh host that only reads (no cache), straight on the server."""
        reader = Reader.open(self.url, **s3_settings(self.server))
        self._opened.append(reader)
        return reader

    def store(self) -> Any:
        """The bucket itself, for a test that plays an outside actor."""
        return s3_store_for(self.server, self.bucket, PREFIX)

    def close_all(self) -> None:
        for opened in reversed(self._opened):
            with contextlib.suppress(Exception):
                opened.close()


def cli(*argv: str) -> int:
    """Run ``runarchive ARGV`` in this process; the exit code (2 for a usage error)."""
    try:
        return main(list(argv))
    except SystemExit as exc:  # argparse: unknown command or option
        return int(exc.code or 0)


def first(method: str, kind: str) -> Callable[[str, str], bool]:
    """A fault-proxy filter accepting only the first ``method`` request on a ``kind``
    object (segment, index, manifest) from now on."""
    seen = [0]

    def accept(m: str, path: str) -> bool:
        if m != method or what(path) != kind:
            return False
        seen[0] += 1
        return seen[0] == 1

    return accept


def cli_env(server: S3Server) -> dict[str, str]:
    """RUNARCHIVE_* variables that let the CLI reach ``server``."""
    return {
        "RUNARCHIVE_ENDPOINT_URL": server.endpoint_url,
        "RUNARCHIVE_REGION": server.region,
        "RUNARCHIVE_ADDRESSING_STYLE": "path",
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
    }
