"""Client-side encryption: sealed segments and sealed index fields (format 3).

Envelope encryption: each run has a random 256-bit data key per key-encryption
key (KEK); a :class:`~runarchive.crypto.providers.KeyProvider` wraps it and only the wrapped
form is stored, in the run index (``keys``) and in the header of every segment it
encrypts. :class:`Keyring` creates, unwraps (once per process) and re-wraps data
keys. Layouts are in ``docs/format.md`` §11; this module is the only code that
sees plaintext key material, and nothing here logs.

A sealed segment object is one plaintext JSON header line, ``\\n``, then the
AES-256-GCM ciphertext (tag appended) of the zstd frame a plaintext segment
would be, with the header line as associated data: the header cannot be altered
or moved to another segment without failing authentication. The nonce is derived
from the data key and the SHA-256 of the zstd frame it encrypts, so a retried flush
of the same records produces the same bytes and the same key (the create-only PUT is then a
no-op, as for plaintext segments).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runarchive.config import ArchiveConfig
from runarchive.crypto.providers import KeyProvider, KmsKeyProvider, LocalKeyProvider
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
    utcnow,
)

ALG = "AES-256-GCM"
SEALED_HEADER_TYPE = "sealed-segment"
SEALED_FIELDS = ("metadata", "result", "error")  # RunIndex fields that carry agent data
_NONCE_LABEL = b"runarchive segment nonce v1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise CorruptObjectError(where, "a base64 field does not decode") from None


def context(run_id: str) -> dict[str, str]:
    """What a provider binds to a run's wrapped data keys (KMS encryption context)."""
    return {"runarchive:run": run_id}


def field_aad(run_id: str, name: str) -> bytes:
    """Associated data of a sealed index/manifest field."""
    return f"runarchive:{run_id}:{name}".encode()


class Keyring:
    """The key providers of an archive: ``writer`` wraps new data keys (``None``: this
    archive writes plaintext); every provider reads. Thread-safe.

    Unwrapped data keys are cached for the process's lifetime (at most 4,096), so a
    run costs one unwrap (one KMS ``Decrypt``) per data key, not per segment.
    """

    def __init__(self, providers: Sequence[KeyProvider], writer: KeyProvider | None) -> None:
        self.providers = list(providers)
        if writer is not None and writer not in self.providers:
            self.providers.insert(0, writer)
        self.writer = writer
        self._plain: dict[tuple[str, str], bytes] = {}
        # Data keys made for a run but not yet in its index (the flush that carries
        # them may be retried): reused, so a retry re-creates the same bytes.
        self._fresh: dict[tuple[str, str], tuple[DataKey, bytes]] = {}
        self._lock = threading.Lock()

    @property
    def writes(self) -> bool:
        """Whether new data of this archive is encrypted."""
        return self.writer is not None and self.writer.current is not None

    @property
    def current(self) -> str | None:
        """The key id that wraps new data keys."""
        return self.writer.current if self.writer is not None else None

    def provider(self, key_id: str) -> KeyProvider:
        for p in self.providers:
            if p.serves(key_id):
                return p
        raise KeyUnavailableError(
            key_id,
            f"no key provider for {key_id!r} is configured: set the encryption settings "
            "(encryption_keys / encryption_key_file for local:…, encryption_kms_key_id or "
            "encryption=kms for kms:…; docs/encryption.md)",
        )

    def plaintext(self, run_id: str, key: DataKey, *, remote: bool = True) -> bytes:
        """The data key ``key`` of ``run_id``, unwrapped (cached). ``remote=False``
        refuses (``KeyUnavailableError``) to ask a remote provider (KMS) for a key
        not cached yet."""
        return self.unwrapped(run_id, key.kek, key.wrapped, remote=remote)

    def unwrapped(self, run_id: str, kek: str, wrapped: str, *, remote: bool = True) -> bytes:
        """:meth:`plaintext` from a data key's ``kek`` and base64 ``wrapped`` alone."""
        cache_key = (kek, wrapped)
        got = self._plain.get(cache_key)
        if got is None and not remote and self.provider(kek).remote:
            raise KeyUnavailableError(kek, f"{kek} not asked: a listing stays local")
        if got is None:
            raw = unb64(wrapped, f"a data key of run {run_id}")
            got = self.provider(kek).unwrap(kek, raw, context(run_id))
            with self._lock:
                if len(self._plain) >= 4096:
                    self._plain.pop(next(iter(self._plain)))
                self._plain[cache_key] = got
        return got

    def key_by_id(
        self, run_id: str, keys: Sequence[DataKey], dek: str, where: str, *, remote: bool = True
    ) -> bytes:
        for key in keys:
            if key.id == dek:
                return self.plaintext(run_id, key, remote=remote)
        with self._lock:
            for fresh, plain in self._fresh.values():
                if fresh.id == dek:
                    return plain
        raise CorruptObjectError(where, f"names data key {dek!r}, which the run index lacks")

    def _writing(self) -> tuple[str, KeyProvider]:
        current, writer = self.current, self.writer
        if current is None or writer is None:
            raise KeyUnavailableError("", "this archive has no key to encrypt with")
        return current, writer

    def _generate(self, run_id: str) -> tuple[DataKey, bytes]:
        current, writer = self._writing()
        plain, wrapped = writer.generate(current, context(run_id))
        made = DataKey(
            id=secrets.token_hex(4), kek=current, wrapped=b64(wrapped), created_at=utcnow()
        )
        return made, plain

    def write_key(self, run_id: str, keys: Sequence[DataKey]) -> tuple[DataKey, bytes]:
        """The data key new data of ``run_id`` is sealed with: the run's key under the
        current KEK, or a new one (the caller adds it to the index it writes)."""
        current, _ = self._writing()
        for key in keys:
            if key.kek == current:
                return key, self.plaintext(run_id, key)
        with self._lock:
            got = self._fresh.get((run_id, current))
        if got is not None:
            return got
        made = self._generate(run_id)
        with self._lock:
            return self._fresh.setdefault((run_id, current), made)

    def new_key(self, run_id: str) -> tuple[DataKey, bytes]:
        """A new data key for ``run_id`` under the current KEK, whatever the run has
        (compaction with ``fresh_key``); :meth:`persisted` caches it once written."""
        made = self._generate(run_id)
        with self._lock:
            self._fresh[(run_id, "new:" + made[0].id)] = made
        return made

    def persisted(self, run_id: str, keys: Sequence[DataKey]) -> None:
        """Move the fresh keys of ``run_id`` that ``keys`` (a written index) now holds
        to the unwrapped-key cache (so the next flush asks no provider)."""
        ids = {k.id for k in keys}
        with self._lock:
            for k in [k for k, (dk, _) in self._fresh.items() if k[0] == run_id and dk.id in ids]:
                dk, plain = self._fresh.pop(k)
                self._plain[(dk.kek, dk.wrapped)] = plain

    def rewrap(self, run_id: str, key: DataKey) -> DataKey | None:
        """``key`` wrapped by the current KEK, or ``None`` if it already is."""
        current = self.current
        if current is None:
            raise KeyUnavailableError("", "rekey needs a current key: configure encryption")
        if key.kek == current:
            return None
        old = self.provider(key.kek)
        new = self.provider(current)
        wrapped = unb64(key.wrapped, f"data key {key.id} of run {run_id}")
        if old is new:
            out = old.rewrap(key.kek, wrapped, current, context(run_id))
        else:
            out = new.wrap(current, old.unwrap(key.kek, wrapped, context(run_id)), context(run_id))
        return key.model_copy(update={"kek": current, "wrapped": b64(out)})


def keyring_for(config: ArchiveConfig, key_provider: KeyProvider | None = None) -> Keyring:
    """The keyring an archive's settings describe. ``key_provider`` (any
    :class:`KeyProvider`) is added first and wraps new data keys. A read-only KMS
    provider is always present (no client is made until a ``kms:`` key is met)."""
    providers: list[KeyProvider] = []
    local: LocalKeyProvider | None = None
    if config.encryption_keys is not None:
        local = LocalKeyProvider.from_spec(config.encryption_keys.get_secret_value())
    elif config.encryption_key_file is not None:
        local = LocalKeyProvider.from_file(config.encryption_key_file)
    kms = KmsKeyProvider(
        config.encryption_kms_key_id,
        region_name=config.region,
        endpoint_url=config.kms_endpoint_url,
        profile=config.profile,
    )
    if key_provider is not None:
        providers.append(key_provider)
    if local is not None:
        providers.append(local)
    providers.append(kms)
    writer: KeyProvider | None = key_provider
    if writer is None and config.encryption == "local":
        writer = local
    elif writer is None and config.encryption == "kms":
        writer = kms
    return Keyring(providers, writer)


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
