"""``file://`` store: a local directory laid out exactly like the bucket.

Object ``runs/r1/index.json`` is the file ``<root>/runs/r1/index.json``; the
bytes are the same as in a bucket, so a directory can be synced to S3 as is.
Writes go to a temporary file under ``<root>/.tmp/`` and are then published:

* ``create``   — ``link(tmp, final)``, which fails atomically if ``final`` exists;
* ``IfMatch``  — under an exclusive ``flock`` on ``<root>/.tmp/lock`` (so several
  processes on one host serialise), compare the current ETag, then ``rename``;
* ``overwrite`` — ``rename``.

Every write is fsynced (file and directory) before it returns. ``.tmp/`` is not
part of the key space and is never listed.

``FileStore(root, create=False)`` (what readers use) creates nothing: a missing
``root`` raises ``BucketNotFoundError`` at once, and ``.tmp/`` is made only by the
first write.

A directory cannot lock objects: ``immutable`` puts are plain writes, nothing is
ever under retention, ``set_legal_hold`` raises ``ObjectLockUnsupportedError`` and
``bypass_governance`` on delete changes nothing. The archive refuses an
``object_lock_mode`` or ``sse`` setting on a ``file://`` URL at open.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from runarchive.errors import (
    BucketNotFoundError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)
from runarchive.store._memory import content_etag
from runarchive.store.base import (
    Capabilities,
    GetResult,
    IfMatch,
    Level,
    ObjectMeta,
    PutMode,
    Store,
    check_key,
)

_TMP = ".tmp"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(Store):
    """Objects as files under ``root``; same keys, bytes and CAS semantics as S3."""

    capabilities = Capabilities(conditional_writes=True, multipart=False, remote=False)

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        """Open the directory ``root``, creating it unless ``create`` is false (readers):
        then a missing ``root`` raises ``BucketNotFoundError`` and nothing is created."""
        self.root = Path(root).absolute()
        self._thread_lock = threading.Lock()
        self._tmp_ready = False
        if create:
            self._make_tmp()
        elif not self.root.is_dir():
            raise BucketNotFoundError(
                f"no archive at {self.root} ({self.description}): the directory does not "
                "exist, and reading creates nothing. Check the URL (--url, RUNARCHIVE_URL) "
                "and the working directory; an archive is created by its first writer: "
                "`runarchive demo`, or Archive.open(url) in the agent"
            )

    def _make_tmp(self) -> None:
        if self._tmp_ready:
            return
        try:
            (self.root / _TMP).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create archive directory {self.root}: {exc}") from exc
        self._tmp_ready = True

    @property
    def description(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get(self, key: str) -> GetResult:
        try:
            body = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(f"no object {key!r} in {self.description}", key=key) from None
        return GetResult(body, content_etag(body))

    def head(self, key: str) -> ObjectMeta | None:
        path = self._path(key)
        try:
            body = path.read_bytes()
            mtime = path.stat().st_mtime
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return ObjectMeta(key, len(body), content_etag(body), datetime.fromtimestamp(mtime, UTC))

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        # flock serialises processes; the thread lock serialises threads of this one
        # (flock is per open file description, and each call opens its own).
        self._make_tmp()
        with self._thread_lock, open(self.root / _TMP / "lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def put(
        self, key: str, body: bytes, *, mode: PutMode = "overwrite", immutable: bool = False
    ) -> str:
        final = self._path(key)
        self._make_tmp()
        tmp = self.root / _TMP / f"{uuid.uuid4().hex}.part"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            if mode == "create":
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    raise PreconditionFailedError(f"{key!r} already exists", key=key) from None
            elif isinstance(mode, IfMatch):
                with self._exclusive():
                    current = self.head(key)
                    if current is None or current.etag != mode.etag:
                        raise PreconditionFailedError(f"{key!r} changed since it was read", key=key)
                    os.replace(tmp, final)
            else:
                os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise StoreError(
                f"writing {key!r} in {self.description} failed: {exc}", key=key
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
        return content_etag(body)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        keys: list[str] = []
        # Walk only the deepest directory the prefix names: listing manifest/live/
        # must not read every run's directory.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.root / base if base else self.root
        for dirpath, dirnames, filenames in os.walk(top):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != _TMP]
                rel_dir = ""
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(prefix):
                    keys.append(key.replace(os.sep, "/"))
        for key in sorted(keys):
            meta = self.head(key)
            if meta is not None:  # deleted while listing
                yield meta

    def list_level(self, prefix: str) -> Level:
        base = self.root / prefix.rstrip("/") if prefix.strip("/") else self.root
        try:
            found = sorted((e.name, e.is_dir()) for e in os.scandir(base) if e.name != _TMP)
        except (FileNotFoundError, NotADirectoryError):
            return [], []
        # A directory left empty by deletes holds no key: skipped, as S3 would.
        dirs = [f"{prefix}{n}/" for n, d in found if d and any(os.scandir(base / n))]
        objects = [m for n, d in found if not d and (m := self.head(prefix + n)) is not None]
        return dirs, objects

    def delete(self, key: str, *, bypass_governance: bool = False) -> None:
        # Empty directories are left in place: removing them would race with a
        # concurrent put into the same directory, and list() ignores them.
        self._path(key).unlink(missing_ok=True)
