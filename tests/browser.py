"""Headless Chromium for browser tests, offline: Debian's ``/usr/bin/chromium`` driven by
playwright (``scripts/setup-chromium.sh`` installs it; never ``playwright install``).

    with chromium_page(tmp_path / "downloads") as page:
        requests, errors = record_requests(page), record_errors(page)
        page.goto(path.as_uri())
        ...
        assert external_requests(requests) == [] and errors == []

A missing Chromium or playwright skips the test with the reason, except under CI (CI=true),
where it fails (``tests.services.unavailable``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.services import unavailable

CHROMIUM = os.environ.get("BIFOCAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
TIMEOUT_MS = 15_000


def _sync_playwright() -> Any:
    """playwright's ``sync_playwright``, or the test is skipped (failed under CI)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install playwright)")
    return sync_playwright


def _executable() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing: run scripts/setup-chromium.sh as root")
    return CHROMIUM


@contextmanager
def chromium_browser(downloads: Path | None = None) -> Iterator[Any]:
    """A headless Chromium (playwright ``Browser``) with a fresh profile; closed afterwards.
    Downloads land in ``downloads`` (default: playwright's temporary folder)."""
    sync_playwright, executable = _sync_playwright(), _executable()
    from playwright.sync_api import Error

    with sync_playwright() as driver:
        try:
            browser = driver.chromium.launch(
                executable_path=executable, args=list(CHROMIUM_ARGS), timeout=60_000,
                downloads_path=str(downloads) if downloads else None)
        except Error as error:
            unavailable(f"Chromium did not start: {str(error).splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium_page(downloads: Path | None = None, **context: Any) -> Iterator[Any]:
    """A page (playwright ``Page``) in a fresh context that accepts downloads, blocks service
    workers and times out after ``TIMEOUT_MS``; ``context`` goes to ``new_context``."""
    if downloads is not None:
        downloads.mkdir(parents=True, exist_ok=True)
    with chromium_browser(downloads) as browser:
        session = browser.new_context(accept_downloads=True, service_workers="block", **context)
        page = session.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            yield page
        finally:
            session.close()


def record_requests(page: Any) -> list[str]:
    """The URL of every request the page starts from now on (a live list)."""
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    return urls


def record_errors(page: Any) -> list[str]:
    """Console errors (a CSP violation is one) and uncaught script errors, from now on."""
    errors: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return errors


def external_requests(urls: list[str]) -> list[str]:
    """The URLs that would leave the machine: anything not file:, data:, blob: or about:."""
    return [url for url in urls if not url.startswith(LOCAL_SCHEMES)]
