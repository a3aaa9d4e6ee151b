"""In-memory store: the reference implementation of the store contract.

It also emulates S3 Object Lock for tests: built with ``retention=``, immutable
puts get that retention; legal holds can be set; a locked object cannot be
deleted (``ObjectLockedError``) or overwritten (an unversioned store has no older
version to keep), except a ``GOVERNANCE`` one deleted with ``bypass_governance``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

from runarchive.errors import ObjectLockedError, ObjectNotFoundError, PreconditionFailedError
from runarchive.store.base import (
    Capabilities,
    GetResult,
    IfMatch,
    LockState,
    ObjectMeta,
    PutMode,
    Retention,
    Store,
    check_key,
)


def content_etag(body: bytes) -> str:
    """The ETag S3 gives a single-part object: the quoted MD5 of its body."""
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


class MemoryStore(Store):
    """Objects in a dict. Not durable; for tests and as the contract's reference.

    ``retention`` (default none) is applied to immutable puts, as S3Store applies
    ``object_lock_mode`` / ``object_lock_days``.
    """

    capabilities = Capabilities(
        conditional_writes=True, multipart=False, remote=False, object_lock=True
    )

    def __init__(self, *, retention: Retention | None = None) -> None:
        self._objects: dict[str, bytes] = {}
        self._modified: dict[str, datetime] = {}
        self._locks: dict[str, LockState] = {}
        self._retention = retention
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return "memory store"

    @property
    def retention(self) -> Retention | None:
        return self._retention

    def get(self, key: str) -> GetResult:
        with self._lock:
            body = self._objects.get(check_key(key))
        if body is None:
            raise ObjectNotFoundError(f"no object {key!r} in {self.description}", key=key)
        return GetResult(body, content_etag(body))

    def head(self, key: str) -> ObjectMeta | None:
        with self._lock:
            body = self._objects.get(check_key(key))
            when = self._modified.get(key)
        return None if body is None else ObjectMeta(key, len(body), content_etag(body), when)

    def put(
        self, key: str, body: bytes, *, mode: PutMode = "overwrite", immutable: bool = False
    ) -> str:
        check_key(key)
        with self._lock:
            current = self._objects.get(key)
            if mode == "create" and current is not None:
                raise PreconditionFailedError(f"{key!r} already exists", key=key)
            if isinstance(mode, IfMatch) and (
                current is None or content_etag(current) != mode.etag
            ):
                raise PreconditionFailedError(f"{key!r} changed since it was read", key=key)
            self._refuse_if_locked(key, "overwritten", bypass_governance=False)
            self._objects[key] = bytes(body)
            self._modified[key] = datetime.now(UTC)
            if immutable and self._retention is not None:
                self._locks[key] = LockState(self._retention.mode, self._retention.until())
            else:
                self._locks.pop(key, None)
        return content_etag(body)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        with self._lock:
            items = sorted(
                (k, v, self._modified.get(k))
                for k, v in self._objects.items()
                if k.startswith(prefix)
            )
        for k, v, when in items:
            yield ObjectMeta(k, len(v), content_etag(v), when)

    def delete(self, key: str, *, bypass_governance: bool = False) -> None:
        with self._lock:
            check_key(key)
            self._refuse_if_locked(key, "deleted", bypass_governance=bypass_governance)
            self._objects.pop(key, None)
            self._modified.pop(key, None)
            self._locks.pop(key, None)

    def _refuse_if_locked(self, key: str, what: str, *, bypass_governance: bool) -> None:
        state = self._locks.get(key)
        reason = None if state is None else state.reason(bypass_governance=bypass_governance)
        if reason is not None:
            raise ObjectLockedError(f"{key!r} cannot be {what}: it is under {reason}", key=key)

    def lock_state(self, key: str) -> LockState | None:
        with self._lock:
            if check_key(key) not in self._objects:
                return None
            return self._locks.get(key, LockState())

    def set_legal_hold(self, key: str, on: bool) -> None:
        with self._lock:
            if check_key(key) not in self._objects:
                raise ObjectNotFoundError(f"no object {key!r} in {self.description}", key=key)
            state = self._locks.get(key, LockState())
            self._locks[key] = LockState(state.mode, state.retain_until, on)
