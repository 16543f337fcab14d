"""An operator's way through a failure: find the failed runs, read one, retry it."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard
from tests.browser.functions import CALLS
from tests.browser.pages import document_mark, mark_document, run_row, step_cell, unique


def test_find_read_and_retry_a_failed_run(dashboard: Dashboard, page: Page) -> None:
    order = unique("declined")
    failed = dashboard.send("shop/checkout", order)
    fine = dashboard.send("shop/ping", unique("fine"))
    dashboard.wait_for(failed, "failed")
    dashboard.wait_for(fine, "completed")

    # Filter the list to failed runs: the URL keeps the filter, the rows are all failed.
    page.goto(dashboard.page_url("/runs"))
    form = page.locator("form[data-testid=runs-filter]")
    form.locator("select[name=status]").select_option("failed")
    form.locator("button[data-testid=apply-filters]").click()
    page.wait_for_url(re.compile(r"[?&]status=failed(&|$)"))
    rows = page.locator("table[data-testid=runs-table] tr[data-run-id]")
    expect(run_row(page, failed)).to_be_visible()
    expect(run_row(page, fine)).to_have_count(0)
    statuses = rows.evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert statuses and set(statuses) == {"failed"}, statuses
    page.reload()  # the filter lives in the URL
    expect(page.locator("form[data-testid=runs-filter] select[name=status]")).to_have_value(
        "failed"
    )
    expect(run_row(page, fine)).to_have_count(0)

    # Open it: status, the error with its traceback, the timeline of its one attempt.
    run_row(page, failed).locator("a").first.click()
    page.wait_for_url(dashboard.page_url(f"/runs/{failed}"))
    expect(page.locator("[data-testid=run-status]")).to_have_text("failed")
    error = page.locator("[data-testid=run-error]")
    expect(error).to_contain_text("CardDeclinedError")
    expect(error).to_contain_text(f"card declined for order {order}")
    expect(error).to_contain_text("Traceback (most recent call last)")
    expect(error).to_contain_text("raise CardDeclinedError")
    expect(step_cell(page, 1, "reserve")).to_have_attribute("data-mode", "executed")
    expect(page.locator("[data-testid=attempt-lane]")).to_have_count(1)
    assert CALLS.of(order) == {"reserve": 1, "charge": 1}

    # Retry it once the cause is fixed; the page follows the run to its end by itself.
    CALLS.fix(order)
    page.locator("button[data-testid=action-retry]").click()
    page.wait_for_load_state()
    token = mark_document(page)
    status = page.locator("[data-testid=run-status]")
    assert status.inner_text().strip() != "completed", "finished before the page could follow it"
    expect(status).to_have_text("completed")
    assert document_mark(page) == token, "the page was reloaded to show the new state"
    expect(page.locator("[data-testid=run-result]")).to_contain_text(f"charged {order}")

    # Attempt 2 replayed the reserve step from the memo and ran the charge again.
    expect(step_cell(page, 2, "reserve")).to_have_attribute("data-mode", "replayed")
    expect(step_cell(page, 2, "charge")).to_have_attribute("data-mode", "executed")
    assert CALLS.of(order) == {"reserve": 1, "charge": 2}
    run = dashboard.get_run(failed)
    assert run.status == "completed"
    assert run.result == {"reserved": {"reserved": order}, "charged": f"charged {order}"}
