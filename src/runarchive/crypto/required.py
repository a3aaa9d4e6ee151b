"""``encryption_required`` on the read path: refuse a run that is plaintext where
ciphertext belongs, before any of it is trusted (``docs/encryption.md``)."""

from __future__ import annotations

from runarchive.errors import EncryptionError
from runarchive.format.model import RunIndex


def check_required(index: RunIndex, required: bool) -> None:
    """Raise ``EncryptionError`` if ``required`` and ``index`` (or one of its segments)
    is plaintext; do nothing otherwise."""
    # With encryption_required, plaintext where ciphertext belongs is an attack
    # (someone with write access replaced the index), not an old run.
    if not required:
        return
    plain = [s.key for s in index.segments if s.dek is None]
    if not index.keys or plain:
        what = f"segment {plain[0]!r}" if plain and index.keys else "its index"
        raise EncryptionError(
            f"run {index.run_id!r} is not encrypted ({what} is plaintext) and "
            "encryption_required is set: refusing to read it. If the run predates "
            "encryption, compact it with encryption on; otherwise its index was replaced."
        )
