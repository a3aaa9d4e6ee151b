"""Test support: backends, real S3 servers, the fault proxy, child processes, trust helpers.

Imported as ``support.<module>`` (``tests/`` is on the path: pyproject's ``pythonpath``, and
the scripts run as subprocesses put it there themselves). Not a test folder: pytest
collects nothing here.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
"""The ``tests/`` folder (children and scripts put it on ``sys.path``)."""

CHILDREN = Path(__file__).resolve().parent / "children"
"""Scripts run as child processes by the tests (each one "host" or one crashing writer)."""
