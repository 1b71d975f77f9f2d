"""The flow around the screens (issue 16, point 4): filters and the chosen finding in the URL, over-long
input and unknown pages said in one line, one definition of parity, Finance scoped to its dates, the menu
starting with "Overview", a favicon served locally, the demo's settings as they run, and times in UTC.
AppTest in-process on the demo of tests/test_dashboard.py, and one Chromium walk for Back and Forward."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import altair as alt
import pandas as pd
import pytest

from monitor.clock import now_utc
from monitor.emulator.demo import INCIDENT_EMAIL
from monitor.rules.findings import PARITY_DEFINITION
from tests import streamlit_server
from tests.streamlit_server import go, main_text, settle, sidebar_pages
from tests.test_dashboard import PAGES, all_text, demo, no_exception, open_page, own_copy, use  # noqa: F401
from ui import charts, menu

REPO_ROOT = Path(__file__).resolve().parent.parent


def _open_with(page: str, query: dict[str, str]):
    """open_page with query parameters whose names clash with its own (`page`)."""
    from streamlit.testing.v1 import AppTest

    from tests.test_dashboard import DASHBOARD, TIMEOUT

    at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT)
    at.run()
    at.switch_page(page)
    at.query_params.update(query)
    return at.run()


# --- the URL keeps the search, the filters, the page and the chosen finding ---------------------------------


def test_discrepancies_reads_its_search_filters_and_finding_from_the_url(demo, use):  # noqa: F811
    use(demo)
    at = open_page(PAGES[0], search=INCIDENT_EMAIL, kind="paid_without_subscription", status="open")
    no_exception(at)
    assert at.text_input(key="search").value == INCIDENT_EMAIL
    assert at.multiselect(key="kind").value == ["paid_without_subscription"]
    table = at.dataframe[0].value
    assert set(table["customer_email"]) == {INCIDENT_EMAIL} and set(table["kind"]) == {
        "paid_without_subscription"
    }


def test_a_new_search_starts_at_page_one(demo, use):  # noqa: F811
    """(The browser writes bound widgets to the URL; the Chromium test below sees it there.)"""
    use(demo)
    at = open_page(PAGES[0])
    at.pagination(key="page").set_value(2).run()
    assert at.session_state["page"] == 2
    at.text_input(key="search").input("webhook").run()
    no_exception(at)
    assert at.session_state["page"] == 1


@pytest.mark.parametrize(
    ("page", "key", "what"),
    [(0, "search", "The search is too long"), (1, "q", "The e-mail or id is too long")],
)
def test_an_over_long_search_is_said_in_one_line_not_cut(demo, use, page, key, what):  # noqa: F811
    use(demo)
    at = open_page(PAGES[page], **{key: "a" * 400})
    no_exception(at)
    said = [e.value for e in at.error]
    assert len(said) == 1 and f"{what}: 400 characters, at most 320" in said[0].replace("\\", "")
    assert not at.dataframe


def test_a_page_number_the_list_does_not_have_is_said(demo, use):  # noqa: F811
    use(demo)
    at = _open_with(PAGES[0], {"page": "999"})
    no_exception(at)
    assert any("There is no page 999 of this list" in w.value.replace("\\", "") for w in at.warning)
    assert len(at.dataframe[0].value) == 50  # the first page instead


@pytest.mark.parametrize(
    ("url", "base", "unknown"),
    [
        ("http://127.0.0.1:8501/", "", None),
        ("http://127.0.0.1:8501/Customer_lookup", "", None),
        ("http://127.0.0.1:8501/finance", "", None),
        ("http://127.0.0.1:8501/no_such_page", "", "no_such_page"),
        ("https://ops.example.com/monitor/Finance", "/monitor", None),
        ("https://ops.example.com/monitor/", "monitor", None),
        ("https://ops.example.com/monitor/Finanse", "monitor", "Finanse"),
        (None, "", None),
    ],
)
def test_an_unknown_page_is_recognised_behind_any_base_path(url, base, unknown):
    assert menu.unknown_page(url, base) == unknown


# --- the menu, the icon, the settings ---------------------------------------------------------------------


def test_the_page_icon_is_a_file_of_the_dashboard_not_a_download():
    assert menu.FAVICON.is_file() and menu.FAVICON.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    source = (REPO_ROOT / "ui" / "context.py").read_text()
    assert "page_icon=str(menu.FAVICON)" in source


def test_infrastructure_shows_what_the_demo_runs_not_the_defaults(demo, use):  # noqa: F811
    use(demo)
    at = open_page(PAGES[3])
    no_exception(at)
    shown = next(df.value for df in at.dataframe if "setting" in df.value.columns).set_index("setting")[
        "value"
    ]
    assert "built-in Stripe emulator" in shown["STRIPE_API_BASE"]
    assert "https://app.example-saas.com/stripe/webhook" in shown["EXPECTED_WEBHOOK_URL"]
    assert "demo-operator" in shown["sign-in"] and "probed live" in shown["REDIS_URLS"]
    assert not any(str(v).startswith("(default)") for v in shown[["STRIPE_API_BASE", "EXPECTED_WEBHOOK_URL"]])


# --- Finance ------------------------------------------------------------------------------------------------


def _issue_dates(where: Path) -> dict[str, list[str]]:
    con = sqlite3.connect(where / "monitor.db")
    try:
        rows = con.execute(
            "SELECT kind, occurred_at FROM findings WHERE kind IN ('refunded_but_active', 'active_without_payment')"
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list[str]] = {}
    for kind, at in rows:
        out.setdefault(kind, []).append(at)
    return out


def test_every_finance_table_and_csv_is_scoped_to_the_chosen_dates(demo, use):  # noqa: F811
    use(demo)
    assert _issue_dates(demo)  # the demo has both kinds, all of them recent
    at = open_page(PAGES[4])
    no_exception(at)
    downloads = at.get("download_button")
    assert len(downloads) == 4 and any(
        "Refunded but still active (CSV, 2 rows)" in d.proto.label for d in downloads
    )
    long_ago = now_utc().date().replace(day=1) - timedelta(days=3 * 365)  # within the picker's 10 years
    at.date_input(key="dates").set_value((long_ago, long_ago + timedelta(days=30))).run()
    no_exception(at)
    labels = [d.proto.label for d in at.get("download_button")]
    assert labels and all("(CSV, 0 rows)" in label for label in labels), labels
    assert f"{long_ago:%Y-%m-%d} to {long_ago + timedelta(days=30):%Y-%m-%d} (UTC)" in all_text(at)


def test_finance_presets_set_the_dates_and_parity_is_defined_once(demo, use):  # noqa: F811
    use(demo)
    at = open_page(PAGES[4])
    today = now_utc().date()
    first_of_month = today.replace(day=1)
    at.button(key="preset:This month").click().run()
    no_exception(at)
    assert tuple(at.date_input(key="dates").value) == (first_of_month, today)
    assert at.button(key="preset:This month").proto.type == "primary"
    at.button(key="preset:Last month").click().run()
    last = first_of_month - timedelta(days=1)
    assert tuple(at.date_input(key="dates").value) == (last.replace(day=1), last)
    assert PARITY_DEFINITION in [m.help for m in at.metric if m.label.startswith("Parity")] or not at.metric
    assert any(s.proto.help == PARITY_DEFINITION for s in at.subheader)


def test_finance_parity_is_the_reconciles_parity_over_the_same_payments(demo, use):  # noqa: F811
    """One definition, one number: over all the demo's payments, Finance's parity is the reconcile's."""
    from monitor import store, views
    from monitor.config import load
    from tests.test_dashboard import urls

    engine = store.open_store(load(urls(demo), toml_path=demo / "none.toml").monitor_database_url)
    try:
        now = now_utc()
        totals = views.finance(engine, period="month", since=now - timedelta(days=3650), until=now)["totals"]
        history = views.parity_history(engine, since=now - timedelta(days=3650))
    finally:
        engine.dispose()
    reconciled = history.iloc[-1]
    assert totals["payments"].sum() == reconciled["payments"] > 0
    assert totals["matched_payments"].sum() == reconciled["matched"] < reconciled["payments"]


# --- the audit log and times --------------------------------------------------------------------------------


def test_times_on_chart_axes_are_24_hour_utc():
    spec = alt.Chart(pd.DataFrame({"t": []})).mark_tick().encode(x=charts.utc_axis("t", "UTC")).to_dict()
    x = spec["encoding"]["x"]
    assert x["scale"]["type"] == "utc"
    assert all("%I" not in f and "%p" not in f for f in x["axis"]["format"].values())
    frame = charts.with_utc_text(
        pd.DataFrame({"t": [pd.Timestamp("2026-12-02 13:05", tz="UTC"), None]}), "t", "s"
    )
    assert list(frame["s"]) == ["2026-12-02 13:05 UTC", ""]
    pages = [REPO_ROOT / "dashboard.py", *sorted((REPO_ROOT / "pages").glob("*.py"))]
    for path in [*pages, *sorted((REPO_ROOT / "ui").glob("*.py"))]:
        code = path.read_text()
        assert not re.search(r'alt\.X\("[^"]+:T"', code), f"{path.name}: a time axis outside ui.charts"
        assert "%I" not in code and "%p" not in code, path.name


# --- Back and Forward in Chromium ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    with streamlit_server.demo_dashboard(tmp_path_factory.mktemp("flow")) as (url, env, _):
        yield url, env


@pytest.mark.browser
@pytest.mark.slow
def test_back_and_forward_keep_a_search_and_the_icon_is_local(served, page):
    url, _ = served
    go(page, url, "/")
    links = sidebar_pages(page)
    # Streamlit's own menu lists every page, the Overview first (dashboard.py links to Overview.py)
    assert list(links) == [label for _, label, _ in menu.ENTRIES]
    icon = page.evaluate("() => document.querySelector(\"link[rel*='icon']\").href")
    assert icon.startswith(url), icon  # served by the dashboard, not fonts.gstatic.com

    go(page, url, links["Discrepancies"])
    box = page.locator("[data-testid='stTextInput'] input").first
    box.fill(INCIDENT_EMAIL)
    box.press("Enter")
    settle(page)
    assert "search=" in page.url and INCIDENT_EMAIL.split("@")[0] in page.url
    go(page, url, links["Webhooks"])
    page.go_back()
    settle(page)
    assert page.locator("[data-testid='stTextInput'] input").first.input_value() == INCIDENT_EMAIL
    assert "search=" in page.url
    page.go_forward()
    settle(page)
    assert "Endpoint audit" in main_text(page)
    page.go_back()
    settle(page)
    page.reload()
    settle(page)
    assert page.locator("[data-testid='stTextInput'] input").first.input_value() == INCIDENT_EMAIL

    go(page, url, "/no_such_page")
    assert "There is no page /no_such_page" in main_text(page)
