"""The markers select what they say: ``-m "not real_server"`` runs nothing on SeaweedFS."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import TESTS


def collected(marker_expression: str) -> list[str]:
    """The test ids ``pytest --collect-only -m <expression>`` selects over tests/."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            marker_expression,
            str(TESTS),
        ],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    # 5: nothing selected, which the assertions below report better than a return code.
    assert proc.returncode in (0, 5), proc.stdout[-3000:] + proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if "::" in line]


@pytest.mark.slow
def test_not_real_server_selects_nothing_on_the_real_server() -> None:
    # Two collections, side by side (each takes seconds): an item matches an expression
    # or its negation, so together they are the whole suite.
    with ThreadPoolExecutor(max_workers=2) as pool:
        on_server, without = pool.map(collected, ["real_server", "not real_server"])
    assert set(on_server).isdisjoint(without)
    on_seaweed = [t for t in on_server if "seaweed" in t.lower()]
    assert len(on_seaweed) > 100, on_seaweed  # the rule below is not vacuous
    assert [t for t in without if "seaweed" in t.lower()] == []
    # The same test on file:// is still selected.
    contract = "tests/store/test_contract.py::TestOurStores::"
    assert contract + "test_put_get_roundtrip_and_etag[file]" in without
    assert contract + "test_put_get_roundtrip_and_etag[seaweedfs]" in on_server
