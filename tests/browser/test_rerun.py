"""Rerun from a chosen step: the steps before it come from the memo and do not run again."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard
from tests.browser.functions import CALLS
from tests.browser.pages import step_cell, unique


def test_rerun_from_a_step_replays_the_steps_before_it(dashboard: Dashboard, page: Page) -> None:
    order = unique("report")
    source = dashboard.send("reports/build", order)
    dashboard.wait_for(source, "completed")
    assert CALLS.of(order) == {"extract": 1, "transform": 1, "load": 1}

    page.goto(dashboard.page_url(f"/runs/{source}"))
    form = page.locator("form[data-testid=rerun-form]")
    form.locator("select[name=from_step]").select_option("load")
    form.locator("button[data-testid=action-rerun]").click()

    # The rerun is a new run; the dashboard takes us to it.
    page.wait_for_url(re.compile(r"/runs/(?!" + re.escape(source) + r")[0-9a-f-]{36}(\?|$)"))
    rerun = urlsplit(page.url).path.rsplit("/", 1)[1]
    expect(page.locator("[data-testid=run-status]")).to_have_text("completed")
    expect(step_cell(page, 1, "extract")).to_have_attribute("data-mode", "replayed")
    expect(step_cell(page, 1, "transform")).to_have_attribute("data-mode", "replayed")
    expect(step_cell(page, 1, "load")).to_have_attribute("data-mode", "executed")

    # On the worker's side: only the load step's handler ran again.
    assert CALLS.of(order) == {"extract": 1, "transform": 1, "load": 2}
    run = dashboard.get_run(rerun)
    assert (run.status, run.result, run.data) == ("completed", "saved 6", {"order": order})
