"""The dashboard in a real browser (Debian's Chromium through Playwright), as a support person uses it: the
demo is synced and reconciled, `streamlit run dashboard.py` serves it, and the USD 149 customer is found
by e-mail and activated through the dialog in two clicks.

Screenshots for the README are rewritten only with UPDATE_SCREENSHOTS=1, so `make test` leaves the tree
clean: `UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_browser.py`.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import streamlit_server
from tests.services import run_cli
from tests.streamlit_server import go, main_text, settle, sidebar_pages
from tests.stripe_cast import REDIS_ERROR

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
CHROMIUM, CHROMIUM_ARGS = streamlit_server.CHROMIUM, streamlit_server.CHROMIUM_ARGS
STAGING_URL = "https://staging.example-saas.com/stripe/webhook"
PAGES = {
    "Overview": "overview",
    "Discrepancies": "discrepancies",
    "Customer lookup": "customer_lookup",
    "Webhooks": "webhooks",
    "Infrastructure": "infrastructure",
    "Finance": "finance",
    "Audit log": "audit_log",
}


def open_findings(env: dict[str, str]) -> list[dict]:
    done = run_cli(["reconcile", "--json"], env)
    assert done.returncode == 0, done.stderr
    return [f for f in json.loads(done.stdout)["findings"] if f["status"] == "open"]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, dict[str, str], Path]]:
    """The demo, synced and reconciled by the CLI, served by `streamlit run dashboard.py`: (URL, env, dir)."""
    with streamlit_server.demo_dashboard(tmp_path_factory.mktemp("browser")) as served:
        yield served


def screenshot(page, name: str) -> None:
    """A full-page screenshot in docs/screenshots/, only when UPDATE_SCREENSHOTS=1. Streamlit scrolls inside
    its main element, so the viewport is made as tall as the page first."""
    if os.environ.get("UPDATE_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(max(height + 40, 1000), 6000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_every_page_opens_without_an_exception_and_the_first_shows_the_incident(served, page):
    url, env, _ = served
    page.goto(url)
    settle(page)
    first = main_text(page)
    assert "149" in first
    assert REDIS_ERROR in first
    assert "dana.whitfield@example.com" in first
    screenshot(page, "overview")

    links = sidebar_pages(page)
    assert list(links) == list(PAGES)
    for name, href in links.items():
        go(page, url, href)
        exceptions = page.locator("[data-testid='stException']")
        assert exceptions.count() == 0, f"{name}: {exceptions.first.inner_text()[:500]}"
        text = main_text(page)
        if name == "Webhooks":
            assert STAGING_URL in text
        if name == "Infrastructure":
            assert REDIS_ERROR in text
        if name != "Overview":
            screenshot(page, PAGES[name])

    finding = next(
        f for f in open_findings(env) if f["kind"] == "paid_without_subscription" and f["amount"] == 14900
    )
    go(page, url, f"{links['Discrepancies']}?finding={finding['id']}")
    text = main_text(page)
    assert "Stripe side" in text and "App side" in text and REDIS_ERROR in text
    screenshot(page, "finding_detail")


def test_support_activates_the_usd_149_customer_through_the_dialog(served, page):
    url, env, where = served
    incident = [
        f for f in open_findings(env) if f["kind"] == "paid_without_subscription" and f["amount"] == 14900
    ]
    assert incident, "the demo has an open USD 149 paid_without_subscription finding"
    email, payment_id = incident[0]["customer_email"], incident[0]["payment_id"]

    page.goto(url)
    settle(page)
    lookup = [href for name, href in sidebar_pages(page).items() if re.search("customer|lookup", name, re.I)]
    go(page, url, lookup[0])
    box = page.locator("[data-testid='stTextInput'] input").first
    box.fill(email)
    box.press("Enter")
    settle(page)
    assert "USD 149.00" in main_text(page)
    screenshot(page, "customer_lookup")

    page.locator("button", has_text=re.compile("activate", re.I)).first.click()  # click 1
    dialog = page.locator("[role='dialog']")
    dialog.wait_for(state="visible", timeout=30_000)
    settle(page)
    assert "would create an active row" in dialog.inner_text()
    screenshot(page, "activate_dialog")
    dialog.locator("button", has_text=re.compile("confirm", re.I)).first.click()  # click 2
    settle(page)
    dialog.wait_for(state="detached", timeout=30_000)
    assert "Created" in main_text(page)

    app = sqlite3.connect(where / "app.db")
    try:
        rows = app.execute(
            "SELECT status FROM subscriptions WHERE stripe_checkout_session_id = ?", (payment_id,)
        ).fetchall()
    finally:
        app.close()
    assert rows == [("active",)]

    page.locator("button", has_text="Reconcile now").click()
    settle(page)
    assert "no open activation finding any more" in main_text(page)
    screenshot(page, "activated")
    left = [
        f
        for f in open_findings(env)
        if f["payment_id"] == payment_id and f["kind"] == "paid_without_subscription"
    ]
    assert left == []
