"""The browser tests' fixtures (tests/support/browser.py): a logged-in headless Chromium page."""

from tests.support.browser import browser_page, browser_user  # noqa: F401 (fixtures)
