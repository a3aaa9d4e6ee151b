"""Debian's headless ``chromium`` driven by Playwright, kept off the network: what the
viewer's browser tests open pages in. A missing chromium is a failure saying what to
do, not a skip: ``make test``'s set-up installs it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from playwright import sync_api  # a dev dependency: missing, collection fails loudly

# Headless, and nothing of its own on the network: no QUIC, no background fetches
# (component updates, sync, safe-browsing lists), no first-run pages.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium() -> Iterator[Any]:
    """A Playwright browser on ``/usr/bin/chromium`` (or ``chromium`` on PATH), closed
    after use."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(
            "no chromium on PATH: `make test` installs Debian's chromium in its set-up "
            "(or: apt-get install chromium)"
        )
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def launch_another(browser: Any, *extra_args: str) -> Any:
    """A second chromium from ``browser``'s Playwright (one per process: a second
    ``sync_playwright`` refuses to start), with ``extra_args`` added; close it after."""
    return browser.browser_type.launch(
        executable_path=shutil.which("chromium"),
        headless=True,
        args=[*CHROMIUM_ARGS, *extra_args],
    )
