"""A run that flow control holds back says why on its page, and starts there live when the
slot frees (issue 11: "the operations API and dashboard show why a run is not starting")."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard
from tests.browser.functions import CALLS, GATES
from tests.browser.pages import (
    document_mark,
    mark_document,
    record_navigations,
    unique,
)


def test_a_run_held_back_by_its_concurrency_key_says_why_then_starts_live(
    dashboard: Dashboard, page: Page
) -> None:
    order = unique("held")
    label = f'order="{order}"'
    why = f"waiting for a concurrency slot of {label} (1 of 1 running)"
    try:
        # The first run of the order takes the key's one slot and waits at its gate; the
        # second is sent only then, so it is the one held back.
        first = dashboard.send("shop/fulfil", order)
        dashboard.wait_for(first, "running")
        second = dashboard.send("shop/fulfil", order)
        held = dashboard.get_run(second)
        assert (held.status, held.held_back) == ("queued", why)

        page.goto(dashboard.page_url(f"/runs/{second}"))
        status = page.locator("[data-testid=run-status]")
        held_back = page.locator("[data-testid=held-back]")
        expect(status).to_have_text("queued")
        expect(page.locator("[data-testid=flow-control]")).to_have_text(
            [f"concurrency {label}: 1 at once"]
        )
        expect(held_back).to_have_text(why)
        assert CALLS.of(order) == {"pack": 1}, "the second run started beside the first"

        # Through the Server-Sent Events stream, not the polling fallback.
        expect(page.locator("body")).to_have_attribute("data-live", "connected")
        navigations = record_navigations(page)
        token = mark_document(page)

        GATES.open(order)  # the first finishes and frees the slot; the second takes it

        expect(status).to_have_text("completed")
        expect(held_back).to_have_count(0)
        expect(page.locator("[data-testid=run-result]")).to_contain_text(f"packed {order}")
        # The run's flow controls stay on it: they were decided when it was created.
        expect(page.locator("[data-testid=flow-control]")).to_have_text(
            [f"concurrency {label}: 1 at once"]
        )
        assert document_mark(page) == token, "the page was reloaded to show the new state"
        assert navigations == []
    finally:
        GATES.open(order)  # whatever happened above: no handler left at the gate
    assert dashboard.wait_for(first, "completed").result == f"packed {order}"
    done = dashboard.get_run(second)
    assert (done.status, done.held_back) == ("completed", None)
    assert CALLS.of(order) == {"pack": 2}
