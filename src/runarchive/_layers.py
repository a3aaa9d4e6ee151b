"""The layers of runarchive, bottom to top: the one table that
``tests/arch/test_layers.py`` enforces and ``docs/design.md`` ("Module map") follows.

A module may import modules of its own layer or of a layer below, never above, and
no import (top-level, in a function, or under ``TYPE_CHECKING``) may close a cycle.
The package face, ``runarchive/__init__.py``, re-exports the public API and is
exempt. Nothing imports this module at run time.
"""

from __future__ import annotations

# (layer name, the top-level modules and packages under ``runarchive`` in it)
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "ground",
        frozenset(
            {"errors", "faults", "logs", "telemetry", "policy", "config", "_layers", "_version"}
        ),
    ),
    ("store and cache", frozenset({"store", "cache"})),
    ("format", frozenset({"format"})),
    ("crypto", frozenset({"crypto"})),
    ("engine", frozenset({"engine"})),
    ("maintenance", frozenset({"maintenance"})),
    ("compliance", frozenset({"compliance"})),
    ("viewer", frozenset({"viewer"})),
    ("facade", frozenset({"archive", "run", "reader"})),
    ("adapters", frozenset({"adapters", "langgraph", "compat", "testing"})),
    ("cli", frozenset({"cli"})),
)
