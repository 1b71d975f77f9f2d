"""Incidents on the dashboard: the Overview's status line (its words: tests/test_incidents.py's table) and
incident cards, "Recover all" (ui.recover: its dry-run plan, its progress, the incident resolved after a
reconcile), and the incident a finding or customer belongs to.
AppTest in-process on the demo (the fixtures of test_dashboard), then once in Chromium.

Screenshots for the README are rewritten only with UPDATE_SCREENSHOTS=1:
`UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_incidents_ui.py -m browser`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.emulator.demo import DEMO_STAGING_WEBHOOK_URL, INCIDENT_EMAIL
from tests import streamlit_server
from tests import test_dashboard as dashboard
from tests.services import run_cli
from tests.streamlit_server import main_text, settle
from tests.test_browser import SCREENSHOTS, screenshot
from tests.test_dashboard import (
    PAGES,
    all_text,
    incident_payment,
    no_exception,
    open_page,
    rows_for,
    unescaped,
)

# test_dashboard's fixtures: the demo synced, reconciled and probed once per module; its environment; a copy.
demo, use, own_copy = dashboard.demo, dashboard.use, dashboard.own_copy
STATUS_LINE = "CRITICAL — redis:channels down, webhook endpoint misconfigured"


def redis_card(at) -> str:
    """The key of the Recover all button on the redis:channels outage's card."""
    titles = [unescaped(m.value) for m in at.markdown if "Incident: " in m.value]
    assert titles and "Incident: redis:channels down" in titles[0], titles  # outages are listed first
    keys = [b.key for b in at.button if b.label == "Recover all"]
    return keys[0]


# --- the Overview ----------------------------------------------------------------------------------------


def test_the_overview_opens_with_the_status_line_then_the_incidents(demo, use):
    use(demo)
    at = open_page()
    no_exception(at)
    assert unescaped(at.error[0].value) == STATUS_LINE  # the first alert on the page
    headings = [h.value for h in at.subheader]
    assert headings.index("Open incidents (4)") < headings.index("Status of every component")
    text = all_text(at)
    assert "Incident: webhook endpoint misconfigured" in text
    assert f"Stripe delivers to {DEMO_STAGING_WEBHOOK_URL}" in text


def test_the_outage_card_counts_its_customer_money_and_what_can_be_recovered(demo, use):
    use(demo)
    at = open_page()
    key = redis_card(at)
    texts = [t.value for t in at.text]
    assert any("USD 149.00 at risk" in t and "1 recoverable" in t for t in texts), texts
    assert f"1 customer: {INCIDENT_EMAIL}" in texts
    recover = at.button(key=key)
    assert recover.label == "Recover all" and not recover.disabled


def test_recover_all_shows_the_plan_recovers_with_progress_and_the_incident_resolves(own_copy, use):
    use(own_copy)
    payment_id = incident_payment(own_copy)
    at = open_page()
    at.button(key=redis_card(at)).click().run()
    no_exception(at)
    assert any("Plan (dry run):** 1 will create an active row" in i.value for i in at.info)
    plan = next(d.value for d in at.dataframe if "step" in d.value.columns)
    assert list(plan["payment"]) == [payment_id] and list(plan["customer"]) == [INCIDENT_EMAIL]
    assert list(plan["amount"]) == ["USD 149.00"]
    assert rows_for(own_copy, payment_id) == []  # a plan writes nothing

    at.button(key="recover:confirm").click().run()
    no_exception(at)
    bars = at.get("progress")
    assert [b.proto.value for b in bars] == [100]
    assert "1 of 1" in bars[0].proto.text
    assert any("Done:** 1 active row created" in s.value for s in at.success)
    assert [status for _, status in rows_for(own_copy, payment_id)] == ["active"]

    at.button(key="recover:reconcile").click().run()
    no_exception(at)
    assert any("is resolved" in unescaped(s.value) for s in at.success), [s.value for s in at.success]
    assert "Incident: redis:channels down" not in all_text(at)
    assert [status for _, status in rows_for(own_copy, payment_id)] == ["active"]


def test_a_viewer_sees_recover_all_off_and_is_refused_anyway(own_copy, use):
    use(own_copy, OPERATOR_ROLES="demo-operator=viewer,someone@example.com=support")
    at = open_page()
    no_exception(at)
    recover = [b for b in at.button if b.label == "Recover all"]
    assert recover and all(b.disabled for b in recover)
    at.session_state["recover:open"] = recover[0].key.rsplit(":", 1)[1]  # as if clicked anyway
    at.run()
    assert any("may not recover" in e.value for e in at.error)
    assert not any(b.key == "recover:confirm" for b in at.button)


# --- the finding's and the customer's incidents --------------------------------------------------------


def test_a_finding_names_its_incidents_and_where_stripe_delivers(demo, use):
    use(demo)
    at = open_page(PAGES[0], finding=dashboard.incident_finding(demo))
    no_exception(at)
    text = all_text(at)
    assert "This finding is part of" in text and "Incident: redis:channels down" in text
    assert f"Stripe delivers to {DEMO_STAGING_WEBHOOK_URL}; expected: https://" in text
    assert any(link.label == "Webhooks" for link in at.get("page_link"))


def test_a_customer_names_the_incidents_that_affect_them(demo, use):
    use(demo)
    at = open_page(PAGES[1], q=INCIDENT_EMAIL)
    no_exception(at)
    text = all_text(at)
    assert "This customer is affected by" in text and "Incident: redis:channels down" in text


def test_discrepancies_group_the_open_findings_by_incident(demo, use):
    use(demo)
    at = open_page(PAGES[0])
    no_exception(at)
    assert not [m for m in at.markdown if "redis:channels down" in unescaped(m.value)]  # the plain list first
    at.toggle(key="group").set_value(True).run()
    no_exception(at)
    causes = [unescaped(m.value) for m in at.markdown if "· inc_" in unescaped(m.value)]
    assert causes and "redis:channels down" in causes[0], causes  # outages first, as on the Overview
    assert any("staging" in c or "endpoint" in c for c in causes), causes
    assert [x for x in at.expander if x.label.startswith("Its ")]
    linked = open_page(PAGES[0], group="true")  # the switch lives in the URL: a link opens it grouped
    no_exception(linked)
    assert [m for m in linked.markdown if "· inc_" in unescaped(m.value)]


# --- in Chromium -------------------------------------------------------------------------------------------


def dialog_screenshot(dialog, name: str) -> None:
    """The dialog alone, in docs/screenshots/, only when UPDATE_SCREENSHOTS=1 (as test_browser.screenshot)."""
    if os.environ.get("UPDATE_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    dialog.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, dict[str, str], Path]]:
    with streamlit_server.demo_dashboard(tmp_path_factory.mktemp("incidents-browser")) as served:
        yield served


@pytest.mark.browser
@pytest.mark.slow
def test_support_recovers_the_redis_incident_from_the_overview_in_chromium(served, page):
    if not Path(streamlit_server.CHROMIUM).exists():
        pytest.fail(f"{streamlit_server.CHROMIUM} is missing: `make system` installs it", pytrace=False)
    url, env, where = served
    page.goto(url)
    settle(page)
    text = main_text(page)
    assert text.lstrip().find(STATUS_LINE) >= 0
    assert text.index(STATUS_LINE) < text.index("Incident: redis:channels down")
    assert "Recover all" in text and INCIDENT_EMAIL in text
    screenshot(page, "overview_incidents")

    page.locator("button", has_text="Recover all").first.click()  # the first card: the redis outage
    dialog = page.locator("[role='dialog']")
    dialog.wait_for(state="visible", timeout=30_000)
    settle(page)
    plan = dialog.inner_text()
    assert "Plan (dry run)" in plan and "will create an active row" in plan and "USD 149.00" in plan
    dialog_screenshot(dialog, "recover_all_plan")

    dialog.locator("button", has_text=re.compile("Confirm: recover")).click()
    dialog.locator("[data-testid='stProgress']").wait_for(state="visible", timeout=60_000)
    settle(page)
    done = dialog.inner_text()
    assert "1 of 1" in done and "Done:" in done and "active row created" in done
    dialog_screenshot(dialog, "recover_all_done")

    dialog.locator("button", has_text="Reconcile now").click()
    dialog.wait_for(state="detached", timeout=60_000)
    settle(page)
    text = main_text(page)
    assert "is resolved" in text and "Incident: redis:channels down" not in text

    listed = run_cli(["incidents", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    outages = [
        x
        for x in json.loads(listed.stdout)["incidents"]
        if x["cause"]["kind"] == "outage" and (x["cause"]["component"] or "").startswith("redis")
    ]
    assert all(x["status"] == "resolved" or x["recoverable"] == 0 for x in outages), outages
