"""The browser fixture: Playwright driving Debian's Chromium, headless.

Skipped where /usr/bin/chromium or Playwright is missing, except under CI=true, where that is
a failure.
"""

import os
import shutil

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None


@pytest.fixture
def browser():
    if sync_playwright is None or not shutil.which(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"Playwright or {CHROMIUM} is missing under CI")
        pytest.skip(f"needs Playwright and {CHROMIUM}")
    # Playwright's sync API keeps an event loop in this thread; Django's ORM calls made by
    # the test itself are still synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
