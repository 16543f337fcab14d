"""What every page and action of one dashboard shares, and what a page view answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

    from slayq.client import Client
    from slayq.store.protocol import Store
    from slayq.ui.auth import AuthHook
    from slayq.ui.csrf import CsrfTokens


@dataclass(frozen=True)
class Dashboard:
    store: Store
    auth: AuthHook | None
    read_only: bool
    tokens: CsrfTokens
    # With the app's client, a rerun validates edited data against the function's schema
    # and carries its full options; without, it copies what the original run records.
    client: Client | None
    live_interval: float  # seconds between re-checks of a live page
    heartbeat: float  # seconds of quiet before a heartbeat comment on /live


@dataclass
class Page:
    """A view's answer: ``<name>.html`` renders the page, ``<name>_live.html`` its live
    region (sent alone to a page that re-fetches it, and pushed over /live)."""

    name: str
    title: str
    context: dict[str, Any] = field(default_factory=dict)


def dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.slayq_ui
    return found


def base_path(request: Request) -> str:
    """Where the dashboard is mounted (``/ui``), for links; empty at the root."""
    return str(request.scope.get("root_path", "")).rstrip("/")
