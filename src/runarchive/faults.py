"""Named fault points for crash tests. **For tests only.**

``fault_point(name)`` is a no-op unless the environment variable
``RUNARCHIVE_FAULT_POINT`` names that point when this module is imported; then the
process kills itself with ``SIGKILL`` there, as a power cut or an OOM kill would:
no ``finally`` block, no ``atexit`` flush. ``RUNARCHIVE_FAULT_POINT=name:N`` kills
at the N-th time the point is reached (default: the first).

The variable is read once, at import: when it is unset every call is one compare
of a module-level string against ``None``. The points (``docs/design.md``,
"Crash points") sit between the steps of each writer: the flush protocol
(``flush.*``), the manifest CAS (``manifest.*``), multipart uploads
(``multipart.*``), compaction (``compact.*``) and ``gc`` (``gc.*``).
Never set the variable outside tests.
"""

from __future__ import annotations

import os
import signal
import threading

POINTS = frozenset(
    {
        "flush.after_segment_put",
        "flush.after_index_put",
        "flush.after_cache_mark",
        "manifest.before_put",
        "manifest.after_put",
        "multipart.after_part",
        "compact.after_segments",
        "compact.after_index",
        "gc.after_delete",
        "live.after_segment_put",
        "live.after_index_put",
    }
)


def _parse(spec: str | None) -> tuple[str | None, int]:
    if not spec:
        return None, 0
    name, _, count = spec.partition(":")
    if name not in POINTS:
        raise ValueError(
            f"RUNARCHIVE_FAULT_POINT={spec!r} names no fault point; known: {sorted(POINTS)}"
        )
    try:
        hits = int(count) if count else 1
    except ValueError:
        raise ValueError(
            f"RUNARCHIVE_FAULT_POINT={spec!r}: the count after ':' must be an int"
        ) from None
    if hits < 1:
        raise ValueError(f"RUNARCHIVE_FAULT_POINT={spec!r}: the count must be >= 1")
    return name, hits


_ARMED, _hits = _parse(os.environ.get("RUNARCHIVE_FAULT_POINT"))
_LEFT = [_hits]  # hits to go before the kill (a list: no `global` needed)
_HITS = threading.Lock()


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if ``RUNARCHIVE_FAULT_POINT`` names ``name``
    (at its N-th hit with ``name:N``). Otherwise nothing. Tests only."""
    if _ARMED is None or name != _ARMED:
        return
    with _HITS:
        _LEFT[0] -= 1
        if _LEFT[0] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
