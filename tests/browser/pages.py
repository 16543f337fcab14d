"""What the browser tests do on a page, by the dashboard's stable selectors
(/work/wt/notes/UI.md, kept in docs/dashboard.md)."""

from __future__ import annotations

import secrets

from playwright.sync_api import Locator, Page

MARKER = "__slayqTestMarker"


def unique(prefix: str) -> str:
    """An order value no other test uses: tests share one database."""
    return f"{prefix}-{secrets.token_hex(3)}"


def mark_document(page: Page) -> str:
    """Put a value on ``window`` that only the current document has: if it is still there
    later, the page was updated in place, not reloaded or navigated away from."""
    token = secrets.token_hex(8)
    page.evaluate(f"window.{MARKER} = {token!r}")
    return token


def record_navigations(page: Page) -> list[str]:
    """The URLs the page's main frame goes to from now on (empty: updated in place)."""
    navigations: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )
    return navigations


def document_mark(page: Page) -> object:
    return page.evaluate(f"window.{MARKER} ?? null")


def run_row(page: Page, run_id: str) -> Locator:
    return page.locator(f'table[data-testid=runs-table] tr[data-run-id="{run_id}"]')


def step_cell(page: Page, attempt: int, step: str) -> Locator:
    lane = page.locator(
        f'[data-testid=timeline] [data-testid=attempt-lane][data-attempt="{attempt}"]'
    )
    return lane.locator(f'[data-step="{step}"]')
