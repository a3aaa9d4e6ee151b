"""Client-side encryption: sealed segments and sealed index fields (format 3).

What is sealed with a run's data key (:mod:`runarchive.crypto.keyring` creates and
unwraps those keys): segment objects, the agent-data fields of a run index, and the
metadata a manifest entry carries. Layouts are in ``docs/format.md`` §11. Besides
the providers (which hold the KEKs), the keyring unwraps data keys and only this
module encrypts or decrypts with them; nothing here logs.

A sealed segment object is one plaintext JSON header line, ``\\n``, then the
AES-256-GCM ciphertext (tag appended) of the zstd frame a plaintext segment
would be, with the header line as associated data: the header cannot be altered
or moved to another segment without failing authentication. The nonce is derived
from the data key and the SHA-256 of the zstd frame it encrypts, so a retried flush
of the same records produces the same bytes and the same key (the create-only PUT is then a
no-op, as for plaintext segments).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runarchive.crypto.keyring import Keyring, b64, unb64
from runarchive.errors import CorruptObjectError, DecryptionError, KeyUnavailableError
from runarchive.format.codec import (
    EncodedSegment,
    check_contents,
    compress,
    decompress_segment,
    parse_records,
    split_header,
)
from runarchive.format.model import (
    SEALED_FORMAT,
    Checkpoint,
    DataKey,
    Event,
    RunIndex,
    SealedValue,
    SegmentRef,
)

ALG = "AES-256-GCM"
SEALED_HEADER_TYPE = "sealed-segment"
SEALED_FIELDS = ("metadata", "result", "error")  # RunIndex fields that carry agent data
_NONCE_LABEL = b"runarchive segment nonce v1"


def field_aad(run_id: str, name: str) -> bytes:
    """Associated data of a sealed index/manifest field."""
    return f"runarchive:{run_id}:{name}".encode()


# -- segments -------------------------------------------------------------------


def seal_segment(
    run_id: str, first_seq: int, last_seq: int, raw: bytes, key: DataKey, plain: bytes, level: int
) -> EncodedSegment:
    """Encrypt one segment's JSON Lines ``raw``; ``sha256`` is of the stored object."""
    frame = compress(raw, level)
    # From the bytes that are encrypted, not from the JSON Lines: the same records
    # compressed differently (another level or zstd version on a retry) must never
    # share a nonce under one data key.
    mac = hmac.new(plain, _NONCE_LABEL + hashlib.sha256(frame).digest(), hashlib.sha256)
    nonce = mac.digest()[:12]
    header = orjson.dumps(
        {
            "type": SEALED_HEADER_TYPE,
            "format": SEALED_FORMAT,
            "alg": ALG,
            "run": run_id,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "dek": key.id,
            "kek": key.kek,
            "wrapped_key": key.wrapped,
            "nonce": b64(nonce),
        }
    )
    body = header + b"\n" + AESGCM(plain).encrypt(nonce, frame, header)
    return EncodedSegment(body=body, raw_bytes=len(raw), sha256=hashlib.sha256(body).hexdigest())


def split_sealed(body: bytes, key: str) -> tuple[dict[str, Any], bytes, bytes]:
    """A sealed object's header (parsed), header line and ciphertext."""
    line, sep, ct = body.partition(b"\n")
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        header = None
    if not sep or not isinstance(header, dict) or header.get("type") != SEALED_HEADER_TYPE:
        raise CorruptObjectError(key, "not a sealed segment (no sealed-segment header line)")
    return header, line, ct


def check_stored(body: bytes, ref: SegmentRef) -> None:
    """The stored object's SHA-256 against its ref (no key needed)."""
    actual = hashlib.sha256(body).hexdigest()
    if actual != ref.sha256:
        raise CorruptObjectError(
            ref.key,
            f"SHA-256 of the stored object is {actual[:16]}..., the index says "
            f"{ref.sha256[:16]}...",
        )


def check_sealed(body: bytes, ref: SegmentRef, run_id: str) -> tuple[dict[str, Any], bytes, bytes]:
    """What can be checked of a sealed segment without its key: the stored SHA-256 and
    the plaintext header against ``ref``. Returns :func:`split_sealed`'s parts."""
    check_stored(body, ref)
    header, line, ct = split_sealed(body, ref.key)
    want = {"run": run_id, "first_seq": ref.first_seq, "last_seq": ref.last_seq, "dek": ref.dek}
    for name, value in want.items():
        if header.get(name) != value:
            raise CorruptObjectError(
                ref.key, f"sealed header {name} is {header.get(name)!r}, expected {value!r}"
            )
    return header, line, ct


def open_segment(
    body: bytes, ref: SegmentRef, run_id: str, keyring: Keyring | None, keys: Sequence[DataKey]
) -> bytes:
    """The JSON Lines of a sealed segment, after checking its SHA-256, its header
    against ``ref`` and the ciphertext's authentication tag."""
    frame = open_sealed_frame(body, ref, run_id, keyring, keys)
    # Authentic ciphertext is not a bound: whoever holds the key can seal a bomb.
    return decompress_segment(frame, ref.key, raw_bytes=ref.raw_bytes)


def open_sealed_frame(
    body: bytes, ref: SegmentRef, run_id: str, keyring: Keyring | None, keys: Sequence[DataKey]
) -> bytes:
    """The zstd frame inside a sealed segment, not decompressed (a streaming reader
    bounds that by ``ref.raw_bytes`` itself), after checking the stored object's SHA-256,
    its header against ``ref`` and the ciphertext's authentication tag."""
    header, line, ct = check_sealed(body, ref, run_id)
    kek = str(header.get("kek"))
    if keyring is None:
        raise KeyUnavailableError(
            kek,
            f"run {run_id!r} is encrypted (segment {ref.key!r} under key {kek!r}): configure "
            "that key to read it (docs/encryption.md)",
        )
    plain = keyring.key_by_id(run_id, keys, str(ref.dek), ref.key)
    nonce = unb64(str(header.get("nonce")), ref.key)
    try:
        return AESGCM(plain).decrypt(nonce, ct, line)
    except InvalidTag:
        raise DecryptionError(
            ref.key,
            f"the ciphertext fails AES-GCM authentication under data key {ref.dek} "
            f"(key {kek}): it was altered after it was written",
            kek,
        ) from None


def segment_raw(
    body: bytes,
    ref: SegmentRef,
    run_id: str,
    keyring: Keyring | None = None,
    keys: Sequence[DataKey] = (),
) -> bytes:
    """The checked JSON Lines of any segment object, sealed (``ref.dek``) or not."""
    if ref.dek is not None:
        return open_segment(body, ref, run_id, keyring, keys)
    return decompress_segment(body, ref.key, ref.sha256, ref.raw_bytes)


def decode_any(
    body: bytes,
    ref: SegmentRef,
    run_id: str,
    keyring: Keyring | None = None,
    keys: Sequence[DataKey] = (),
) -> list[Checkpoint | Event]:
    """The records of any segment object (see :func:`segment_raw`), checked against
    ``ref`` and ``run_id`` (:func:`~runarchive.format.codec.check_contents`)."""
    raw = segment_raw(body, ref, run_id, keyring, keys)
    header, rest = split_header(raw, ref.key, ref.format)
    records = parse_records(rest, ref.key, first_line=1 if header is None else 2)
    check_contents(header, records, ref, run_id)
    return records


# -- fields of the index and the manifest ---------------------------------------


def seal_value(run_id: str, name: str, value: Any, key: DataKey, plain: bytes) -> SealedValue:
    """Encrypt one JSON value (random nonce)."""
    nonce = os.urandom(12)
    ct = AESGCM(plain).encrypt(nonce, orjson.dumps(value), field_aad(run_id, name))
    return SealedValue(dek=key.id, nonce=b64(nonce), ct=b64(ct))


def open_value(
    run_id: str,
    name: str,
    sealed: SealedValue,
    keyring: Keyring,
    keys: Sequence[DataKey],
    where: str,
    *,
    remote: bool = True,
) -> Any:
    """Decrypt one sealed JSON value."""
    plain = keyring.key_by_id(run_id, keys, sealed.dek, where, remote=remote)
    kek = next((k.kek for k in keys if k.id == sealed.dek), "?")
    return _open_json(plain, sealed.nonce, sealed.ct, run_id, name, where, kek)


def _open_json(
    plain: bytes, nonce: str, ct: str, run_id: str, name: str, where: str, kek: str
) -> Any:
    try:
        data = AESGCM(plain).decrypt(unb64(nonce, where), unb64(ct, where), field_aad(run_id, name))
    except InvalidTag:
        raise DecryptionError(where, f"sealed {name} fails AES-GCM authentication", kek) from None
    return orjson.loads(data)


def _has(index: RunIndex, name: str) -> bool:
    value = getattr(index, name)
    return bool(value) if name == "metadata" else value is not None


def seal_index(
    index: RunIndex, keyring: Keyring, data_key: tuple[DataKey, bytes] | None = None
) -> RunIndex:
    """``index`` as a writer that encrypts stores it: plaintext agent data moved into
    ``sealed`` (fields already sealed stay as they are) and format 3. ``data_key``
    defaults to the run's key under the current KEK (:meth:`Keyring.write_key`)."""
    todo = [n for n in SEALED_FIELDS if _has(index, n)]
    key, plain = data_key or keyring.write_key(index.run_id, index.keys)
    keys = index.keys if any(k.id == key.id for k in index.keys) else (*index.keys, key)
    sealed = dict(index.sealed)
    for name in todo:
        sealed[name] = seal_value(index.run_id, name, getattr(index, name), key, plain)
    return index.model_copy(
        update={
            "format": SEALED_FORMAT,
            "keys": keys,
            "sealed": sealed,
            "metadata": {},
            "result": None,
            "error": None,
        }
    )


def open_index(index: RunIndex, keyring: Keyring | None, where: str) -> RunIndex:
    """``index`` with its sealed fields decrypted into place (``sealed`` kept)."""
    if not index.sealed:
        return index
    if keyring is None:
        keks = sorted({k.kek for k in index.keys}) or ["?"]
        raise KeyUnavailableError(
            keks[0],
            f"run {index.run_id!r} is encrypted (key {', '.join(keks)}): configure the key "
            "to read its metadata and records (docs/encryption.md)",
        )
    update = {
        name: open_value(index.run_id, name, value, keyring, index.keys, where)
        for name, value in index.sealed.items()
        if name in SEALED_FIELDS
    }
    return index.model_copy(update=update)


@dataclass(frozen=True)
class SealedMetadata:
    """What a manifest entry carries of an encrypted run's metadata."""

    value: SealedValue
    key: DataKey


def sealed_metadata(index: RunIndex) -> SealedMetadata | None:
    """The sealed metadata of an index and the data key that opens it."""
    value = index.sealed.get("metadata")
    if value is None:
        return None
    key = next((k for k in index.keys if k.id == value.dek), None)
    return None if key is None else SealedMetadata(value, key)


def open_entry_metadata(
    run_id: str,
    sealed: Mapping[str, Any],
    key: Mapping[str, Any],
    keyring: Keyring,
    where: str,
    *,
    remote: bool = True,
) -> Any:
    """Decrypt a manifest entry's ``sealed_metadata`` with its ``metadata_key``, both as
    the stored JSON (the listing builds each entry's model once, afterwards)."""
    kek = str(key["kek"])
    plain = keyring.unwrapped(run_id, kek, str(key["wrapped"]), remote=remote)
    return _open_json(
        plain, str(sealed["nonce"]), str(sealed["ct"]), run_id, "metadata", where, kek
    )
