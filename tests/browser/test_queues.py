"""Pausing a queue from the dashboard stops the worker from taking its runs; resuming lets
them go."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard
from tests.browser.functions import CALLS
from tests.browser.pages import unique


def test_pause_and_resume_a_queue(dashboard: Dashboard, page: Page) -> None:
    # A run asleep in queue "mail" gives the queue its row on the page.
    asleep = dashboard.send("mail/reminder", unique("asleep"))
    dashboard.wait_for(asleep, "sleeping")
    page.goto(dashboard.page_url("/queues"))
    row = page.locator('tr[data-queue="mail"]')
    expect(row).to_have_attribute("data-paused", "false")

    row.locator("button[data-testid=queue-pause]").click()
    try:
        row = page.locator('tr[data-queue="mail"]')
        expect(row).to_have_attribute("data-paused", "true")
        order = unique("held")
        held = dashboard.send("mail/reminder", order)
        time.sleep(1.5)  # the worker polls every 0.5 s and is woken by new runs
        assert dashboard.get_run(held).status == "queued"
        assert CALLS.of(order) == {}

        row.locator("button[data-testid=queue-resume]").click()
        expect(page.locator('tr[data-queue="mail"]')).to_have_attribute("data-paused", "false")
    finally:
        dashboard.call(dashboard.client.resume_queue, "mail")  # whatever happened above
    dashboard.wait_for(held, "sleeping")
    assert CALLS.of(order) == {"draft": 1}
