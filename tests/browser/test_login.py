"""Logging in to the dashboard: HTTP Basic auth in front of every page."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Error as PlaywrightError

from tests.browser.conftest import PASSWORD, USER, Dashboard, open_context


def test_with_the_credentials_the_dashboard_opens(dashboard: Dashboard, page: Page) -> None:
    response = page.goto(dashboard.page_url("/"))
    assert response is not None
    assert response.status == 200
    for name in ("overview", "runs", "waits", "queues", "schedules", "workers", "audit"):
        expect(page.locator(f"nav a[data-testid=nav-{name}]")).to_be_visible()
    page.locator("nav a[data-testid=nav-runs]").click()
    expect(page.locator("table[data-testid=runs-table]")).to_be_attached()
    assert page.url.split("?")[0] == dashboard.page_url("/runs")


def test_without_credentials_every_page_answers_401(dashboard: Dashboard, browser: Browser) -> None:
    context = open_context(browser, logged_in=False)
    try:
        page = context.new_page()
        for path in ("/", "/runs", "/audit"):
            url = dashboard.page_url(path)
            # With no credentials to answer the challenge, headless Chromium ends the
            # navigation with ERR_INVALID_AUTH_CREDENTIALS; the response is the 401.
            with (
                page.expect_response(url) as answer,
                pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"),
            ):
                page.goto(url)
            response = answer.value
            assert response.status == 401, path
            assert response.headers.get("www-authenticate", "").lower().startswith("basic")
            assert "runs-table" not in response.text()
    finally:
        context.close()


def test_a_wrong_password_answers_401(dashboard: Dashboard, browser: Browser) -> None:
    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD + "x"})
    try:
        response = context.new_page().goto(dashboard.page_url("/runs"))
        assert response is not None
        assert response.status == 401
    finally:
        context.close()
