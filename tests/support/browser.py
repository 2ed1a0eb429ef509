"""Headless Chromium for the browser tests: Debian's package, driven by Playwright's driver.

Playwright's own browser download is not used (only package registries are reachable): `make
browser` installs Debian's chromium, and ``chromium()`` launches /usr/bin/chromium. Without it a
browser test skips, except under CI=true, where a missing browser is a failure (CI installs it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_chromium(what: str) -> None:
    """Skip the calling test module when Chromium is missing, unless under CI (``what`` names
    the test, for the skip reason). Call it at module level."""
    if not CHROMIUM.exists() and not IN_CI:
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install "
            f"chromium, or make browser) to run {what}; under CI=true this is a failure",
            allow_module_level=True,
        )


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit. Use it from a module-scoped fixture: Playwright's
    sync API holds an event loop on the main thread while it runs, and later tests (asyncio.run
    in the runner's) need it gone."""
    if not CHROMIUM.exists():  # only reachable under CI: require_chromium covers the rest
        pytest.fail(f"{CHROMIUM} is missing: CI must install the chromium package", pytrace=False)
    # Chromium's sandbox needs user namespaces that root in a container does not get.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=args
        )
        try:
            yield browser
        finally:
            browser.close()
