"""A screenshot of every dashboard page at desktop and phone width, light and dark.

Written to SLAY_Q_SCREENSHOTS (default .artifacts/screenshots/; ``bash scripts/test``
prints the folder), and the first screen of the runs and run pages (a failed run, and a
run held back by flow control) to its docs/ folder, from which docs/images/ was copied.
Each page must load (200), raise no JavaScript error and fit a phone's width without
scrolling the whole page sideways.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import Dashboard, open_context
from tests.browser.functions import CALLS, GATES
from tests.browser.pages import unique

# "held": the page of a run that flow control holds back (a concurrency key's slot taken).
PAGES = ["overview", "runs", "run", "held", "waits", "queues", "schedules", "workers", "audit"]
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
# Small pictures for docs/images (copied from here by hand): the first screen of these
# pages (of a run's page: down to the end of its timeline), one CSS pixel per pixel.
FOR_DOCS = {
    ("runs", "desktop", "light"),
    ("run", "desktop", "light"),
    ("runs", "phone", "dark"),
    ("run", "phone", "dark"),
    ("held", "desktop", "light"),
    ("held", "phone", "dark"),
}


def for_docs(page: Page, path: Path) -> None:
    width = page.viewport_size["width"] if page.viewport_size else 1280
    height = page.viewport_size["height"] if page.viewport_size else 800
    timeline = page.locator("[data-testid=timeline]")
    if timeline.count():
        box = timeline.bounding_box()
        assert box is not None
        height = int(box["y"] + box["height"] + 12)
    page.screenshot(
        path=path,
        scale="css",
        full_page=True,
        clip={"x": 0, "y": 0, "width": width, "height": height},
    )


@pytest.fixture(scope="module")
def held(dashboard: Dashboard) -> Iterator[str]:
    """A run queued behind the one slot of its concurrency key for the whole module: the
    run holding the slot waits at its gate until then."""
    order = unique("shot")
    holder = dashboard.send("shop/fulfil", order)
    try:
        dashboard.wait_for(holder, "running")
        run_id = dashboard.send("shop/fulfil", order)
        assert dashboard.get_run(run_id).held_back is not None
        yield run_id
    finally:
        GATES.open(order)
    dashboard.wait_for(run_id, "completed")


@pytest.fixture(scope="module")
def showcase(dashboard: Dashboard, held: str) -> dict[str, str]:
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
        "held": f"/runs/{held}",
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
            if name == "held":
                expect(page.locator("[data-testid=held-back]")).to_be_visible()
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{name} at {size} width scrolls sideways by {overflow}px"
            page.screenshot(path=screenshots / f"{name}-{size}-{scheme}.png", full_page=True)
            if (name, size, scheme) in FOR_DOCS:
                for_docs(page, screenshots / "docs" / f"dashboard-{name}-{size}.png")
        assert errors == []
    finally:
        context.close()
    assert len(list(screenshots.glob(f"*-{size}-{scheme}.png"))) == len(PAGES)
