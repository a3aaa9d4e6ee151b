"""Fixtures of the trust tests: hosts sharing one real SeaweedFS bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.servers import S3Server
from support.trust import Hosts, cli_env


@pytest.fixture
def hosts(seaweed: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hosts]:
    """Simulated hosts (each its own cache) on one SeaweedFS bucket, the CLI's
    environment pointed at it; every archive they opened is closed afterwards."""
    for name, value in cli_env(seaweed).items():
        monkeypatch.setenv(name, value)
    h = Hosts(seaweed, tmp_path)
    yield h
    h.close_all()
