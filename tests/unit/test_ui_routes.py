"""The dashboard's routes over a test harness (MemoryStore): each page renders what the
store holds; auth, CSRF and read-only refusals; filters kept in the URL; the actions."""

from __future__ import annotations

import re

import anyio
import pytest
from starlette.testclient import TestClient

from tests.unit.ui_fixtures import BROKEN, World, app, basic, basic_auth, token_of

PAGES = ["/", "/runs", "/waits", "/queues", "/schedules", "/workers", "/audit"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_with_the_nav_and_a_live_region(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200, page.text
    for name in ("overview", "runs", "waits", "queues", "schedules", "workers", "audit"):
        assert f'data-testid="nav-{name}"' in page.text
    assert 'id="live"' in page.text and 'data-live="off"' in page.text
    assert "/static/htmx.min.js" in page.text


def test_the_pages_show_what_the_store_holds(client: TestClient, world: World) -> None:
    runs = client.get("/runs").text
    assert f'data-run-id="{world.failed}" data-status="failed"' in runs
    assert f'data-run-id="{world.waiting}" data-status="waiting"' in runs
    waits = client.get("/waits").text
    assert f'data-run-id="{world.waiting}"' in waits and "media/approved" in waits
    assert "file_id" in waits
    assert (
        "reports/nightly" in client.get("/schedules").text
        and "0 3 * * *" in client.get("/schedules").text
    )
    assert 'data-queue="general"' in client.get("/queues").text
    overview = client.get("/").text
    assert re.search(r'data-testid="count-failed"><span class="n">1<', overview)
    assert re.search(r'data-testid="failure-rate"><span class="n">100.0%<', overview)


def test_the_static_files_are_served_from_the_package(client: TestClient) -> None:
    htmx = client.get("/static/htmx.min.js")
    assert htmx.status_code == 200 and "0BSD" in htmx.text[:300] and "htmx" in htmx.text
    assert client.get("/static/slayq.js").status_code == 200
    assert "prefers-color-scheme: dark" in client.get("/static/slayq.css").text


def test_the_run_page_shows_the_error_with_its_traceback_and_a_lane_per_attempt(
    client: TestClient, world: World
) -> None:
    page = client.get(f"/runs/{world.failed}").text
    assert '<span class="status failed" data-testid="run-status">failed</span>' in page
    error = page[page.index('data-testid="run-error"') :]
    assert "RuntimeError" in error and "the carrier is down" in error and "Traceback" in error
    lanes = re.findall(r'data-testid="attempt-lane" data-attempt="(\d+)"', page)
    assert lanes == ["1", "2"]
    second = page[page.index('data-attempt="2"') :]
    assert 'data-step="charge" data-mode="replayed"' in second
    first = page[page.index('data-attempt="1"') : page.index('data-attempt="2"')]
    assert 'data-step="charge" data-mode="executed"' in first
    assert 'data-testid="action-retry"' in page and 'data-testid="action-cancel"' not in page


def test_an_unknown_run_is_a_404(client: TestClient) -> None:
    assert client.get("/runs/01a2283c-551e-710c-b7de-1d87f88bbfc2").status_code == 404
    assert client.get("/runs/not-an-id").status_code == 404


def test_filters_are_kept_in_the_url_and_select_the_runs(client: TestClient, world: World) -> None:
    page = client.get("/runs", params={"status": "failed", "event": "shop/ship"}).text
    assert f'data-run-id="{world.failed}"' in page
    assert f'data-run-id="{world.waiting}"' not in page
    assert '<option value="failed" selected>' in page
    assert 'value="shop/ship"' in page
    # the bulk form acts on the same filters
    assert 'action="/runs/bulk?status=failed&amp;event=shop%2Fship"' in page
    data = client.get("/runs", params={"data": '{"file_id": "f1"}'}).text
    assert f'data-run-id="{world.waiting}"' in data and f'data-run-id="{world.failed}"' not in data


def test_a_bad_filter_is_named_on_the_page(client: TestClient) -> None:
    page = client.get("/runs", params={"since": "yesterday"})
    assert page.status_code == 200
    assert 'data-testid="filter-error"' in page.text and "since" in page.text
    bad_data = client.get("/runs", params={"data": "[1]"}).text
    assert "data must be a JSON object" in bad_data


def test_pages_follow_the_cursor_with_the_filters(client: TestClient, world: World) -> None:
    events = [("shop/ship", {"order_id": f"x{n}"}) for n in range(55)]
    anyio.run(world.harness.send_events, events)
    first = client.get("/runs", params={"event": "shop/ship"}).text
    assert len(re.findall(r"<tr data-run-id=", first)) == 50
    link = re.search(r'href="(/runs\?[^"]+)" data-testid="next-page"', first)
    assert link is not None and "event=shop%2Fship" in link.group(1)
    second = client.get(link.group(1).replace("&amp;", "&")).text
    assert len(re.findall(r"<tr data-run-id=", second)) == 6
    assert 'data-testid="next-page"' not in second


def test_a_post_without_the_csrf_token_is_refused(client: TestClient, world: World) -> None:
    client.get("/runs")  # sets the cookie
    refused = client.post(f"/runs/{world.failed}/retry", data={}, follow_redirects=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
    forged = client.post(
        f"/runs/{world.failed}/retry", data={"csrf_token": "abc.def"}, follow_redirects=False
    )
    assert forged.status_code == 403
    assert world.run(world.failed).status == "failed"


def test_a_token_of_another_dashboard_is_refused(world: World) -> None:
    store = world.harness.client.store
    with TestClient(app(store, secret="one")) as one, TestClient(app(store, secret="two")) as two:
        token = token_of(one.get("/").text)
        two.cookies.set("slayq_csrf", token)
        answer = two.post(
            f"/runs/{world.failed}/retry", data={"csrf_token": token}, follow_redirects=False
        )
        assert answer.status_code == 403


def test_retry_with_the_token_redirects_and_is_audited(client: TestClient, world: World) -> None:
    token = token_of(client.get(f"/runs/{world.failed}").text)
    answer = client.post(
        f"/runs/{world.failed}/retry", data={"csrf_token": token}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"/runs/{world.failed}?notice=retried")
    BROKEN["on"] = False
    world.drive()
    assert world.run(world.failed).status == "completed"
    page = client.get(f"/runs/{world.failed}").text
    assert 'data-testid="run-result"' in page and "shipped" in page
    audit = client.get("/audit").text
    assert 'data-action="retry"' in audit and "ui:anonymous" in audit


def test_htmx_sends_the_token_as_a_header_and_is_redirected_by_header(
    client: TestClient, world: World
) -> None:
    token = token_of(client.get("/").text)
    answer = client.post(
        f"/runs/{world.waiting}/cancel",
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
        follow_redirects=False,
    )
    assert answer.status_code == 204
    assert answer.headers["hx-redirect"].startswith(f"/runs/{world.waiting}?notice=cancelled")
    assert world.run(world.waiting).status == "cancelled"


def test_an_action_refused_by_the_store_shows_its_error(client: TestClient, world: World) -> None:
    token = token_of(client.get("/").text)
    answer = client.post(f"/runs/{world.waiting}/retry", data={"csrf_token": token})
    assert answer.status_code == 200
    assert 'data-testid="error-notice"' in answer.text and "waiting" in answer.text


def test_basic_auth_asks_refuses_and_names_the_actor(world: World) -> None:
    dashboard = app(world.harness.client.store, auth=basic_auth("ann", "s3cret"))
    with TestClient(dashboard) as client:
        asked = client.get("/runs")
        assert asked.status_code == 401 and asked.headers["www-authenticate"].startswith("Basic")
        assert client.get("/runs", headers=basic("ann", "wrong")).status_code == 401
        assert client.get("/live?src=/runs").status_code == 401
        page = client.get("/runs", headers=basic("ann", "s3cret"))
        assert page.status_code == 200 and "ann" in page.text
        token = token_of(page.text)
        unsigned = client.post(f"/runs/{world.failed}/retry", data={"csrf_token": token})
        assert unsigned.status_code == 401
        client.post(
            f"/runs/{world.failed}/retry",
            data={"csrf_token": token},
            headers=basic("ann", "s3cret"),
        )
    (entry, *_) = world.harness.client.store._audit[::-1]  # type: ignore[attr-defined]
    assert (entry.actor, entry.action) == ("ui:ann", "retry")


def test_an_auth_hook_may_be_async_and_refuse_with_its_own_response(world: World) -> None:
    from starlette.requests import Request
    from starlette.responses import RedirectResponse, Response

    async def hook(request: Request) -> str | Response:
        if request.headers.get("x-user"):
            return request.headers["x-user"]
        return RedirectResponse("/login")

    with TestClient(app(world.harness.client.store, auth=hook)) as client:
        assert client.get("/", follow_redirects=False).headers["location"] == "/login"
        assert "bob" in client.get("/", headers={"x-user": "bob"}).text


def test_read_only_hides_every_action_and_refuses_them(world: World) -> None:
    with TestClient(app(world.harness.client.store, read_only=True)) as client:
        run_page = client.get(f"/runs/{world.failed}").text
        queues = client.get("/queues").text
        runs = client.get("/runs").text
        for html in (run_page, queues):
            assert "<button" not in html and 'method="post"' not in html
        assert 'data-testid="action-retry"' not in run_page
        assert 'data-testid="rerun-form"' not in run_page
        assert 'data-testid="queue-pause"' not in queues
        assert 'data-testid="bulk-retry"' not in runs
        token = token_of(run_page)
        for path, form in (
            (f"/runs/{world.failed}/retry", {}),
            (f"/runs/{world.failed}/rerun", {"from_step": "ship"}),
            ("/queues/general/pause", {}),
            ("/runs/bulk?status=failed", {"action": "retry", "confirm": "1"}),
        ):
            refused = client.post(path, data={"csrf_token": token, **form})
            assert refused.status_code == 403 and "read-only" in refused.text
    assert world.run(world.failed).status == "failed"
    assert world.harness.client.store._audit == []  # type: ignore[attr-defined]


def test_bulk_retry_counts_first_then_acts_on_the_confirmed_count(
    client: TestClient, world: World
) -> None:
    token = token_of(client.get("/runs").text)
    asked = client.post("/runs/bulk?status=failed", data={"csrf_token": token, "action": "retry"})
    assert 'data-testid="bulk-confirm" data-count="1"' in asked.text
    assert 'name="confirm" value="1"' in asked.text
    assert world.run(world.failed).status == "failed"  # a dry run changed nothing
    fragment = client.post(
        "/runs/bulk?status=failed",
        data={"action": "retry"},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert fragment.text.lstrip().startswith('<div class="confirm" data-testid="bulk-confirm"')
    stale = client.post(
        "/runs/bulk?status=failed", data={"csrf_token": token, "action": "retry", "confirm": "7"}
    )
    assert "The selection changed" in stale.text
    assert world.run(world.failed).status == "failed"
    done = client.post(
        "/runs/bulk?status=failed",
        data={"csrf_token": token, "action": "retry", "confirm": "1"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and "retried+1+run" in done.headers["location"]
    assert "status=failed" in done.headers["location"]
    assert world.run(world.failed).status == "queued"


def test_rerun_from_a_step_shows_the_earlier_steps_replayed(
    client: TestClient, world: World
) -> None:
    token = token_of(client.get(f"/runs/{world.failed}").text)
    BROKEN["on"] = False
    client.post(f"/runs/{world.failed}/retry", data={"csrf_token": token})
    world.drive()
    assert [s.name for s in world.run(world.failed).steps] == ["charge", "ship"]
    answer = client.post(
        f"/runs/{world.failed}/rerun",
        data={"csrf_token": token, "from_step": "ship"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    new_id = answer.headers["location"].split("?")[0].removeprefix("/runs/")
    assert new_id != world.failed
    world.drive()
    page = client.get(f"/runs/{new_id}").text
    assert "completed" in page and f'href="/runs/{world.failed}"' in page
    lane = page[page.index('data-testid="attempt-lane" data-attempt="1"') :]
    assert 'data-step="charge" data-mode="replayed"' in lane
    assert 'data-step="ship" data-mode="executed"' in lane
    assert 'data-step="charge" data-mode="executed"' not in page


def test_rerun_with_edited_data(client: TestClient, world: World) -> None:
    token = token_of(client.get(f"/runs/{world.failed}").text)
    answer = client.post(
        f"/runs/{world.failed}/rerun",
        data={"csrf_token": token, "data": '{"order_id": "o2"}'},
        follow_redirects=False,
    )
    new_id = answer.headers["location"].split("?")[0].removeprefix("/runs/")
    assert world.run(new_id).data == {"order_id": "o2"}
    bad = client.post(f"/runs/{world.failed}/rerun", data={"csrf_token": token, "data": "[1]"})
    assert "must be a JSON object" in bad.text


def test_pause_and_resume_a_queue(client: TestClient, world: World) -> None:
    token = token_of(client.get("/queues").text)
    client.post("/queues/general/pause", data={"csrf_token": token})
    page = client.get("/queues").text
    assert 'data-queue="general" data-paused="true"' in page
    assert 'data-testid="queue-resume"' in page
    client.post("/queues/general/resume", data={"csrf_token": token})
    assert 'data-queue="general" data-paused="false"' in client.get("/queues").text
    actions = [e.action for e in world.harness.client.store._audit]  # type: ignore[attr-defined]
    assert actions == ["pause_queue", "resume_queue"]


def test_a_page_asked_for_its_fragment_answers_only_the_live_region(client: TestClient) -> None:
    full = client.get("/runs")
    fragment = client.get("/runs", headers={"X-Slayq-Fragment": "1"})
    assert "<html" not in fragment.text and 'data-testid="runs-table"' in fragment.text
    assert fragment.headers["x-slayq-fingerprint"] == full.headers["x-slayq-fingerprint"]
    assert f'data-fingerprint="{full.headers["x-slayq-fingerprint"]}"' in full.text
