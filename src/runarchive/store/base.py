"""The object-store contract every backend implements (see ``runarchive.store``).

A store is a flat key space of immutable-or-CAS byte objects, the subset of S3
that runarchive needs. Keys are relative to the store's root (an S3 prefix or a
directory) and use ``/`` separators; they never start with ``/`` or contain ``..``.

Put modes (the caller states its intent in the signature, as obstore does):

* ``"create"``   — write only if the key does not exist (S3 ``If-None-Match: *``);
  otherwise :class:`~runarchive.errors.PreconditionFailedError`.
* ``"overwrite"`` — unconditional write.
* ``IfMatch(etag)`` — compare-and-swap: write only if the current ETag equals
  ``etag``. A missing key also fails with ``PreconditionFailedError`` on every
  backend (AWS answers 404 there, SeaweedFS 412; both are mapped to the same error).

Backends: :class:`MemoryStore` (reference), :class:`FileStore` (``file://``,
the embedded default), :class:`S3Store` (any S3-compatible bucket through
boto3). :class:`CountingStore` wraps any of them to count requests and bytes.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from runarchive.errors import (
    ConditionalWritesUnsupportedError,
    InvalidInputError,
    PreconditionFailedError,
)


@dataclass(frozen=True)
class IfMatch:
    """Put mode: replace the object only if its current ETag is ``etag``."""

    etag: str


PutMode = Literal["create", "overwrite"] | IfMatch


@dataclass(frozen=True)
class ObjectMeta:
    """What a listing or a HEAD tells about one object."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class GetResult:
    """An object's body with the ETag it had when read (for a later ``IfMatch``)."""

    body: bytes
    etag: str


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. ``conditional_writes`` is what the backend promises;
    :func:`probe_conditional_writes` checks that the server really enforces it."""

    conditional_writes: bool = True
    multipart: bool = False
    remote: bool = False


_KEY_RE = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid store key, else raise ``InvalidInputError``."""
    if not _KEY_RE.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise InvalidInputError(f"invalid object key {key!r}")
    return key


class Store(ABC):
    """Base class of object stores. Implementations are thread-safe."""

    capabilities: Capabilities = Capabilities()

    @property
    @abstractmethod
    def description(self) -> str:
        """Where this store lives, for messages (never contains credentials)."""

    @abstractmethod
    def get(self, key: str) -> GetResult:
        """Read a whole object. Raises ``ObjectNotFoundError`` if it is missing."""

    @abstractmethod
    def head(self, key: str) -> ObjectMeta | None:
        """Size and ETag of an object, or ``None`` if it does not exist."""

    @abstractmethod
    def put(self, key: str, body: bytes, *, mode: PutMode = "overwrite") -> str:
        """Write ``body`` at ``key`` under ``mode`` and return the new ETag.

        Cost: one request, or 2 + parts for multipart uploads on S3.
        """

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        """Objects whose key starts with ``prefix``, in key order.

        Cost on S3: one request per 1,000 keys. runarchive's hot paths never list.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object is not an error."""

    def lock_reason(self, key: str) -> str | None:
        """Why ``key`` may not be deleted (legal hold, retention), or ``None``.

        Backends without S3 Object Lock never lock anything. Cost on S3: one HEAD.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections and handles."""


def probe_conditional_writes(store: Store) -> None:
    """Check that ``store`` really enforces create-only and If-Match writes.

    Some S3-compatible servers accept the headers and ignore them (all racing
    writers "win"); others refuse every quoted If-Match. Both would silently
    break runarchive's no-lost-update guarantee, so the archive refuses them at
    open. Cost: 5 requests on a sound store; leaves nothing behind.
    """
    key = f"_runarchive/probe/{uuid.uuid4().hex}"
    why = (
        f"{store.description} does not enforce S3 conditional writes "
        "(If-None-Match / If-Match); runarchive needs them so that concurrent writers "
        "never lose an update. Use AWS S3, SeaweedFS, MinIO, R2 or another server that "
        "supports them."
    )
    try:
        etag = store.put(key, b"probe-1", mode="create")
        try:
            store.put(key, b"probe-2", mode="create")
        except PreconditionFailedError:
            pass
        else:
            raise ConditionalWritesUnsupportedError(
                why + " (a create-only write replaced an existing object)", key=key
            )
        try:
            store.put(key, b"probe-3", mode=IfMatch('"0123456789abcdef0123456789abcdef"'))
        except PreconditionFailedError:
            pass
        else:
            raise ConditionalWritesUnsupportedError(
                why + " (an If-Match write with a wrong ETag succeeded)", key=key
            )
        try:
            store.put(key, b"probe-4", mode=IfMatch(etag))
        except PreconditionFailedError as exc:
            raise ConditionalWritesUnsupportedError(
                why + " (an If-Match write with the current ETag was refused)", key=key
            ) from exc
    finally:
        store.delete(key)
