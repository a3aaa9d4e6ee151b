"""In-memory store: the reference implementation of the store contract."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

from runarchive.errors import ObjectNotFoundError, PreconditionFailedError
from runarchive.store.base import (
    Capabilities,
    GetResult,
    IfMatch,
    ObjectMeta,
    PutMode,
    Store,
    check_key,
)


def content_etag(body: bytes) -> str:
    """The ETag S3 gives a single-part object: the quoted MD5 of its body."""
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


class MemoryStore(Store):
    """Objects in a dict. Not durable; for tests and as the contract's reference."""

    capabilities = Capabilities(conditional_writes=True, multipart=False, remote=False)

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return "memory store"

    def get(self, key: str) -> GetResult:
        with self._lock:
            body = self._objects.get(check_key(key))
        if body is None:
            raise ObjectNotFoundError(f"no object {key!r} in {self.description}", key=key)
        return GetResult(body, content_etag(body))

    def head(self, key: str) -> ObjectMeta | None:
        with self._lock:
            body = self._objects.get(check_key(key))
        return None if body is None else ObjectMeta(key, len(body), content_etag(body))

    def put(self, key: str, body: bytes, *, mode: PutMode = "overwrite") -> str:
        check_key(key)
        with self._lock:
            current = self._objects.get(key)
            if mode == "create" and current is not None:
                raise PreconditionFailedError(f"{key!r} already exists", key=key)
            if isinstance(mode, IfMatch) and (
                current is None or content_etag(current) != mode.etag
            ):
                raise PreconditionFailedError(f"{key!r} changed since it was read", key=key)
            self._objects[key] = bytes(body)
        return content_etag(body)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        with self._lock:
            items = sorted((k, v) for k, v in self._objects.items() if k.startswith(prefix))
        for k, v in items:
            yield ObjectMeta(k, len(v), content_etag(v))

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(check_key(key), None)
