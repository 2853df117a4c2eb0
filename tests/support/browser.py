"""A real headless browser for the admin pages: Playwright from PyPI driving Debian's Chromium.

Playwright never downloads a browser here (`playwright install` is never run): it launches
`/usr/bin/chromium`, which `scripts/_venv.sh` (`ensure_chromium`) installs from Debian's
packages. Without it the browser tests are skipped, except under CI (`CI` set), where a missing
browser fails them so that a broken install is noticed.

`browser_page` is a page of a fresh browser, logged in through the admin's login form as
`browser_user` (a superuser: a staff user with every permission), against pytest-django's
`live_server`. `screenshot(page, name)` keeps a PNG under `var/screenshots/` as an artefact.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.factories import StaffUserFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A laptop screen: the console must be readable at this width.
VIEWPORT = {"width": 1366, "height": 900}
BROWSER_PASSWORD = "browser-pw"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (Debian's `chromium`; scripts/test.sh installs it as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the `playwright` package is missing (the dev extras install it)"
    return None


def require_browser() -> None:
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but {reason}", pytrace=False)
    pytest.skip(reason)


def _screenshot_path(name: str) -> Path:
    directory = Path(settings.VAR_DIR) / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.png"


def screenshot(page, name: str) -> Path:
    """Save the whole page as `var/screenshots/<name>.png` and return its path."""
    path = _screenshot_path(name)
    page.screenshot(path=str(path), full_page=True)
    return path


def screenshot_of(locator, name: str) -> Path:
    """Save one element of a page (a locator) as `var/screenshots/<name>.png`."""
    path = _screenshot_path(name)
    locator.screenshot(path=str(path))
    return path


@pytest.fixture
def browser_user(db):
    return StaffUserFactory(username="browser-admin", password=BROWSER_PASSWORD, is_superuser=True)


@pytest.fixture
def browser_page(live_server, browser_user, monkeypatch) -> Iterator:
    """A logged-in admin page in headless Chromium; `page.goto("/admin/...")` is relative to
    the live server."""
    require_browser()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM
    # calls from a thread with a running loop (SynchronousOnlyOperation); the test's own ORM
    # calls are plain synchronous code, so the check does not apply to them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.goto("/admin/login/?next=/admin/")
        page.fill("#id_username", browser_user.username)
        page.fill("#id_password", BROWSER_PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/")
        try:
            yield page
        finally:
            context.close()
            browser.close()
