"""The runs list follows the database live: a new run appears, then finishes, in place."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard
from tests.browser.pages import (
    document_mark,
    mark_document,
    record_navigations,
    run_row,
    unique,
)


def test_a_sent_event_appears_in_the_runs_list_without_a_reload(
    dashboard: Dashboard, page: Page
) -> None:
    page.goto(dashboard.page_url("/runs"))
    expect(page.locator("table[data-testid=runs-table]")).to_be_attached()
    # Through the Server-Sent Events stream, not the polling fallback.
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    navigations = record_navigations(page)
    token = mark_document(page)

    run_id = dashboard.send("shop/ping", unique("live"))

    row = run_row(page, run_id)
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-status", "completed")  # and it changes in place
    assert dashboard.get_run(run_id).status == "completed"
    assert document_mark(page) == token, "the page was reloaded or navigated away"
    assert navigations == []
    # The row leads to the run's page.
    row.locator("a").first.click()
    page.wait_for_url(dashboard.page_url(f"/runs/{run_id}"))
    expect(page.locator("[data-testid=run-status]")).to_have_text("completed")
