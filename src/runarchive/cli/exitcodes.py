"""The exit codes of ``runarchive`` (one place; docs/cli.md has the table).

They follow ``diff`` and ``cmp``: 1 says the thing checked is damaged, 2 says the
command could not do its job, so a script can tell "damage found" from "could not
check" (an unreachable bucket, a missing key, a usage error).
"""

from __future__ import annotations

OK = 0
"""Done; a check found the archive or bundle sound (warnings allowed)."""

DAMAGE = 1
"""Damage found: ``verify`` reported an error, ``verify-export`` a problem, or a
command refused a corrupt or tampered object (``CorruptObjectError``)."""

TROUBLE = 2
"""Could not check or could not do it: a usage error, a bucket that is unreachable or
missing, a missing key or run, a refused setting. Nothing is known about damage."""

NOTHING_CHECKED = 3
"""``verify --all`` found no run in the manifest, so nothing was verified."""

INTERRUPTED = 130
"""Ctrl-C (SIGINT): 128 + 2, as shells report it."""

TABLE = (
    (OK, "success; a check found no damage"),
    (DAMAGE, "damage found (verify, verify-export, a corrupt or tampered object)"),
    (TROUBLE, "could not check: usage error, unreachable or missing archive, missing key"),
    (NOTHING_CHECKED, "verify --all found no run to check"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)
"""(code, meaning) for ``runarchive --help`` and the docs test."""
