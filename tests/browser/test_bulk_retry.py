"""Retry every run a filter selects: the dashboard counts them first, then acts on the count."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard
from tests.browser.functions import CALLS
from tests.browser.pages import run_row, unique


def test_retry_all_matching_shows_the_count_then_retries_them(
    dashboard: Dashboard, page: Page
) -> None:
    order = unique("bulk")  # two runs of one order: a data filter selects just them
    runs = [dashboard.send("shop/checkout", order) for _ in range(2)]
    other = dashboard.send("shop/checkout", unique("not-selected"))
    for run_id in [*runs, other]:
        dashboard.wait_for(run_id, "failed")

    query = urlencode({"status": "failed", "data": json.dumps({"order": order})})
    page.goto(dashboard.page_url(f"/runs?{query}"))
    for run_id in runs:
        expect(run_row(page, run_id)).to_be_visible()
    expect(run_row(page, other)).to_have_count(0)

    page.locator("button[data-testid=bulk-retry]").click()
    confirm = page.locator("[data-testid=bulk-confirm]")
    expect(confirm).to_have_attribute("data-count", "2")
    expect(confirm.locator("[data-testid=bulk-count]")).to_have_text("2")
    # Counted, not done: nothing was retried yet.
    assert [dashboard.get_run(r).status for r in runs] == ["failed", "failed"]

    CALLS.fix(order)
    confirm.locator("button[data-testid=bulk-confirm-submit]").click()
    for run_id in runs:
        assert dashboard.wait_for(run_id, "completed").attempts == 2
    assert dashboard.get_run(other).status == "failed"
    assert CALLS.of(order) == {"reserve": 2, "charge": 4}
