"""A screenshot of every dashboard page at desktop and phone width, light and dark.

Written to SLAY_Q_SCREENSHOTS (default .artifacts/screenshots/; ``bash scripts/test``
prints the folder). Each page must load (200), raise no JavaScript error and fit a phone's
width without scrolling the whole page sideways.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import Dashboard, open_context
from tests.browser.functions import CALLS
from tests.browser.pages import unique

PAGES = ["overview", "runs", "run", "waits", "queues", "schedules", "workers", "audit"]
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def showcase(dashboard: Dashboard) -> dict[str, str]:
    """Runs in every state for the pages to show; the path of each page."""
    done = [dashboard.send("shop/ping", unique("shot")) for _ in range(3)]
    report = dashboard.send("reports/build", unique("shot"))
    order = unique("shot")
    failed = dashboard.send("shop/checkout", order)
    dashboard.send("shop/ship", unique("shot"))  # waits for shop/packed
    dashboard.send("mail/reminder", unique("shot"))  # sleeps an hour
    for run_id in [*done, report]:
        dashboard.wait_for(run_id, "completed")
    dashboard.wait_for(failed, "failed")
    # One retry that fails again: two lanes on the run page, an entry in the audit log.
    dashboard.call(lambda: dashboard.client.retry(failed, actor="ops@example.com"))
    dashboard.wait_for(failed, "failed")
    assert CALLS.of(order)["charge"] == 2
    return {
        "overview": "/",
        "runs": "/runs",
        "run": f"/runs/{failed}",
        "waits": "/waits",
        "queues": "/queues",
        "schedules": "/schedules",
        "workers": "/workers",
        "audit": "/audit",
    }


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", list(SIZES))
def test_every_page_renders_and_is_captured(
    dashboard: Dashboard,
    browser: Browser,
    showcase: dict[str, str],
    screenshots: Path,
    size: str,
    scheme: str,
) -> None:
    context = open_context(
        browser,
        viewport=SIZES[size],
        color_scheme=scheme,
        device_scale_factor=2 if size == "phone" else 1,
        is_mobile=size == "phone",
    )
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        for name in PAGES:
            response = page.goto(dashboard.page_url(showcase[name]))
            assert response is not None
            assert response.status == 200, name
            expect(page.locator("nav a[data-testid=nav-runs]")).to_be_attached()
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{name} at {size} width scrolls sideways by {overflow}px"
            page.screenshot(path=screenshots / f"{name}-{size}-{scheme}.png", full_page=True)
        assert errors == []
    finally:
        context.close()
    assert len(list(screenshots.glob(f"*-{size}-{scheme}.png"))) == len(PAGES)
