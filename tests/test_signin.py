"""A real OpenID Connect sign-in, in Chromium, against a local identity provider (`oidc-provider-mock`, run
by the test as `python -m oidc_provider_mock`): the dashboard runs outside demo mode (a Stripe emulator
with a few payments, a synced app database) with an `[auth]` section in its Streamlit secrets, so
`st.login` sends the browser to the provider, whose authorize form takes the subject typed in it and
vouches for it as the e-mail address the dashboard's OPERATOR_ROLES names.

Support signs in and activates a payment through the dialog; a viewer signs in and finds Activate disabled,
and the monitor function refuses anyway; someone signed in who is not in OPERATOR_ROLES sees no data; and
a support person removed from OPERATOR_ROLES (in `monitor.toml`) while signed in is refused at the next
click, on the same live page with the same identity cookie, and, removed in the environment instead, after
the dashboard restarts with that cookie still valid. Signing out goes through the provider's end-session
page.

Behind a sign-in proxy instead (`TRUSTED_PROXY_HEADER` with its shared `TRUSTED_PROXY_SECRET`, issue 14
point 8), Chromium sends the headers as the proxy would (Playwright's `extra_http_headers`, which reach
Streamlit's WebSocket too, where `st.context.headers` reads them): the identity header without the secret,
with a wrong one, or with the secret in a list signs nobody in and nothing can be activated; with the
secret, support is signed in and activates. The header without a secret stops every command at start.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from monitor import pipeline, repair, store
from monitor.actions import Forbidden, authorize_export
from monitor.config import load
from monitor.emulator import server
from tests.services import clean_env, free_port, run_cli
from tests.streamlit_server import (
    CHROMIUM,
    dashboard,
    main_text,
    settle,
    sidebar_pages,
    sidebar_text,
    stop,
    wait_for,
)
from tests.stripe_cast import Account

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KEY = "sk_test_signin0123456789abcdef"
ROLES = {
    "support@example.com": "support",
    "viewer@example.com": "viewer",
    "leaver@example.com": "support",
}
PROXY_HEADER = "X-Forwarded-Email"
SECRET_HEADER = "X-Proxy-Secret"  # TRUSTED_PROXY_SECRET_HEADER's default
PROXY_SECRET = f"proxy-{secrets.token_hex(16)}"
WRONG_SECRET = f"guess-{secrets.token_hex(16)}"


@dataclass
class World:
    where: Path
    env: dict[str, str]
    roles_file: Path
    pays: dict[str, dict]
    provider: str
    port: int

    def write_roles(self, roles: dict[str, str]) -> None:
        line = ",".join(f"{who}={role}" for who, role in roles.items())
        self.roles_file.write_text(f'operator_roles = "{line}"\n')

    def config(self):
        return load(self.env, toml_path=self.roles_file)

    def rows(self, payment_id: str) -> list[str]:
        con = sqlite3.connect(self.where / "app.db")
        try:
            found = con.execute(
                "SELECT status FROM subscriptions WHERE stripe_checkout_session_id = ?", (payment_id,)
            ).fetchall()
        finally:
            con.close()
        return [status for (status,) in found]

    def runs(self, job: str) -> list[tuple]:
        engine = create_engine(self.env["MONITOR_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                return list(
                    conn.execute(
                        text("SELECT outcome, error, counts FROM job_runs WHERE job = :job ORDER BY id"),
                        {"job": job},
                    )
                )
        finally:
            engine.dispose()

    def ledger(self, payment_id: str) -> list[tuple]:
        engine = create_engine(self.env["MONITOR_DATABASE_URL"])
        try:
            with engine.connect() as conn:
                return list(
                    conn.execute(
                        text(
                            "SELECT operator, outcome, dry_run FROM repairs WHERE payment_id = :p ORDER BY id"
                        ),
                        {"p": payment_id},
                    )
                )
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    """Stripe (an emulator with three paid payments and no subscription rows for them), the app database,
    the monitor's store synced and reconciled, OPERATOR_ROLES in monitor.toml, and the identity provider."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system` installs Debian's chromium", pytrace=False)
    where = tmp_path_factory.mktemp("signin")
    account = Account(int(time.time()))
    pays = {
        who: account.checkout_payment(f"{who}-customer@example.com")
        for who in ("support", "viewer", "leaver", "proxied")
    }
    account.row(account.checkout_payment("fine@example.com"), "fine@example.com")
    account.write_app_db(f"sqlite:///{where / 'app.db'}")

    provider_port = free_port()
    provider_log = where / "provider.log"
    with provider_log.open("w") as out:
        provider = subprocess.Popen(
            [sys.executable, "-m", "oidc_provider_mock", "--port", str(provider_port)],
            cwd=where,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    provider_url = f"http://127.0.0.1:{provider_port}"
    try:
        with server.start(account.objects, api_key=KEY) as stripe:
            env = {
                "STRIPE_API_KEY": KEY,
                "STRIPE_API_BASE": stripe.base_url,
                "APP_DATABASE_URL": f"sqlite:///{where / 'app.db'}",
                "MONITOR_DATABASE_URL": f"sqlite:///{where / 'monitor.db'}",
                "MONITOR_CONFIG": str(where / "monitor.toml"),
                "REDIS_URLS": f"channels=redis://127.0.0.1:{free_port()}/0",
                "PROBE_INTERVAL": "3600",
            }
            w = World(where, env, where / "monitor.toml", pays, provider_url, free_port())
            w.write_roles(ROLES)
            config = w.config()
            engine = store.open_store(config.monitor_database_url)
            try:
                pipeline.run_sync(config, engine)
                pipeline.run_reconcile(config, engine)
            finally:
                engine.dispose()
            wait_for(f"{provider_url}/.well-known/openid-configuration", provider, provider_log)
            (where / "secrets.toml").write_text(
                "[auth]\n"
                f'redirect_uri = "http://127.0.0.1:{w.port}/oauth2callback"\n'
                f'cookie_secret = "{secrets.token_urlsafe(32)}"\n'
                'client_id = "payment-parity-monitor"\n'
                f'client_secret = "{secrets.token_urlsafe(24)}"\n'
                f'server_metadata_url = "{provider_url}/.well-known/openid-configuration"\n'
            )
            yield w
    finally:
        stop(provider)


@pytest.fixture(scope="module")
def served(world):
    with dashboard(
        world.env,
        world.where / "streamlit.log",
        port=world.port,
        args=["--secrets.files", str(world.where / "secrets.toml")],
    ) as running:
        yield running


def sign_in(browser, url: str, who: str):
    """A fresh browser (no cookie), the dashboard's Sign in button, the provider's form: type the subject,
    press Authorize, and land back on the dashboard signed in. Returns the page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    settle(page)
    assert "Sign in" in main_text(page)
    assert "USD" not in main_text(page)  # nothing about payments before signing in
    page.locator("button", has_text="Sign in").click()
    page.wait_for_url(re.compile(r".*/oauth2/authorize.*"), timeout=30_000)
    page.locator("input[name='sub']").fill(who)
    page.locator("button", has_text="Authorize").click()
    page.wait_for_url(re.compile(rf"^{re.escape(url)}/?(\?.*)?$"), timeout=30_000)
    settle(page)
    assert who in sidebar_text(page)
    return page


def look_up(page, url: str, email: str) -> None:
    lookup = [href for name, href in sidebar_pages(page).items() if re.search("lookup", name, re.I)][0]
    page.goto(lookup if lookup.startswith("http") else f"{url}/{lookup.lstrip('/')}")
    settle(page)
    box = page.locator("[data-testid='stTextInput'] input").first
    box.fill(email)
    box.press("Enter")
    settle(page)


def activate_button(page):
    return page.locator("[data-testid='stMain'] button", has_text=re.compile(r"Activate$")).first


def activate_through_dialog(page) -> str:
    """Press Activate (it must be enabled), confirm in the dialog, wait for it to close; the plan it showed."""
    button = activate_button(page)
    assert button.is_enabled()
    button.click()
    dialog = page.locator("[role='dialog']")
    dialog.wait_for(state="visible", timeout=30_000)
    settle(page)
    plan = dialog.inner_text()
    dialog.locator("button", has_text=re.compile("confirm", re.I)).first.click()
    settle(page)
    dialog.wait_for(state="detached", timeout=30_000)
    return plan


def test_support_signs_in_with_openid_connect_and_activates_through_the_dialog(world, served, browser):
    pay = world.pays["support"]
    page = sign_in(browser, served.url, "support@example.com")
    look_up(page, served.url, pay["email"])
    assert "USD 149.00" in main_text(page)
    plan = activate_through_dialog(page)
    assert "would create an active row" in plan
    assert "acting as support@example.com" in plan
    assert "Created" in main_text(page)
    assert world.rows(pay["cs"]) == ["active"]
    assert [(o, outcome) for o, outcome, _ in world.ledger(pay["cs"])] == [
        ("support@example.com", "planned"),
        ("support@example.com", "created"),
    ]
    page.context.close()


def test_a_signed_in_viewer_cannot_activate_and_the_monitor_refuses_anyway(world, served, browser):
    pay = world.pays["viewer"]
    page = sign_in(browser, served.url, "viewer@example.com")
    look_up(page, served.url, pay["email"])
    assert "USD 149.00" in main_text(page)  # a viewer reads
    assert activate_button(page).is_disabled()
    page.context.close()

    result = repair.activate(world.config(), pay["cs"], "viewer@example.com")
    assert result.outcome == "refused" and "viewer" in result.reason
    engine = store.open_store(world.env["MONITOR_DATABASE_URL"])
    try:
        with pytest.raises(Forbidden, match="viewer@example.com may not export"):
            authorize_export(engine, world.config(), "viewer@example.com", "payments.csv")
    finally:
        engine.dispose()

    assert world.rows(pay["cs"]) == []
    assert ("viewer@example.com", "refused", False) in world.ledger(pay["cs"])


def test_someone_signed_in_but_not_in_operator_roles_sees_no_data(world, served, browser):
    page = sign_in(browser, served.url, "stranger@example.com")
    text_now = main_text(page)
    assert "stranger@example.com may not use the dashboard" in text_now
    assert "USD" not in text_now and "customer@example.com" not in text_now

    # Signing out goes through the provider's end-session page and back, signed out.
    page.locator("[data-testid='stSidebar'] button", has_text="Sign out").click()
    page.locator("button", has_text="End session").click()
    page.wait_for_url(re.compile(rf"^{re.escape(served.url)}/?(\?.*)?$"), timeout=30_000)
    settle(page)
    assert "Sign in" in main_text(page) and "stranger@example.com" not in sidebar_text(page)
    page.context.close()
    refusals = [r for r in world.runs("action:view") if "stranger@example.com" in (r[2] or "")]
    assert refusals and refusals[-1][0] == "failed"


def test_a_support_person_removed_from_operator_roles_is_refused_at_the_next_click(world, served, browser):
    pay = world.pays["leaver"]
    page = sign_in(browser, served.url, "leaver@example.com")
    look_up(page, served.url, pay["email"])
    button = activate_button(page)
    assert button.is_enabled()  # drawn while leaver@example.com was support

    world.write_roles({k: v for k, v in ROLES.items() if k != "leaver@example.com"})
    button.click()  # the same live page, the same identity cookie
    settle(page)
    said = main_text(page)
    assert "leaver@example.com may not use the dashboard (not in OPERATOR_ROLES" in said
    assert page.locator("[role='dialog']").count() == 0
    assert world.rows(pay["cs"]) == []
    assert world.ledger(pay["cs"]) == []  # never reached the repair: no plan, no row
    result = repair.activate(world.config(), pay["cs"], "leaver@example.com")
    assert result.outcome == "refused" and "not in OPERATOR_ROLES" in result.reason
    assert world.rows(pay["cs"]) == []
    refusals = [r for r in world.runs("action:view") if "leaver@example.com" in (r[2] or "")]
    assert refusals and refusals[-1][0] == "failed"

    # Removed in the environment instead (which wins over monitor.toml) and the dashboard restarted: the
    # 30-day identity cookie outlives the restart, and is refused after it.
    world.write_roles(ROLES)
    stop(served.process)
    roles = ",".join(f"{k}={v}" for k, v in ROLES.items() if k != "leaver@example.com")
    with dashboard(
        {**world.env, "OPERATOR_ROLES": roles},
        world.where / "streamlit-2.log",
        port=world.port,
        args=["--secrets.files", str(world.where / "secrets.toml")],
    ) as again:
        page.goto(again.url)
        settle(page)
        assert "leaver@example.com" in sidebar_text(page)  # still signed in: the cookie is valid
        assert "leaver@example.com may not use the dashboard" in main_text(page)
    page.context.close()


# --- behind a sign-in proxy: the identity header counts only with the proxy's shared secret ------------------


@pytest.fixture(scope="module")
def proxied(world):
    """The same world behind a sign-in proxy: TRUSTED_PROXY_HEADER, trusted with TRUSTED_PROXY_SECRET."""
    env = {**world.env, "TRUSTED_PROXY_HEADER": PROXY_HEADER, "TRUSTED_PROXY_SECRET": PROXY_SECRET}
    with dashboard(env, world.where / "streamlit-proxy.log") as running:
        yield running


def through_proxy(browser, url: str, headers: dict[str, str]):
    """A fresh browser that sends `headers` with every request, the WebSocket's included, as a proxy would."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, extra_http_headers=headers)
    page = context.new_page()
    page.goto(url)
    settle(page)
    return page


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({PROXY_HEADER: "support@example.com"}, f"the request carries no {SECRET_HEADER} header"),
        (
            {PROXY_HEADER: "support@example.com", SECRET_HEADER: WRONG_SECRET},
            f"the request's {SECRET_HEADER} is not the sign-in proxy's secret",
        ),
        (
            {PROXY_HEADER: "support@example.com", SECRET_HEADER: f"{WRONG_SECRET}, {PROXY_SECRET}"},
            f"the request's {SECRET_HEADER} is not the sign-in proxy's secret",
        ),
        ({PROXY_HEADER: "support@example.com", SECRET_HEADER: ""}, f"carries no {SECRET_HEADER} header"),
    ],
    ids=["no secret", "wrong secret", "a list of secrets", "empty secret"],
)
def test_the_proxy_header_without_the_proxys_secret_signs_nobody_in_and_nothing_is_activated(
    world, proxied, browser, headers, why
):
    pay = world.pays["proxied"]
    page = through_proxy(browser, proxied.url, headers)
    said = main_text(page)
    assert "Nobody is signed in" in said and why in said
    assert "USD" not in said and "customer@example.com" not in said
    assert "support@example.com" not in sidebar_text(page)
    # Straight to the customer's lookup: the same gate, no Activate anywhere.
    page.goto(f"{proxied.url}/Customer_lookup?q={pay['email']}")
    settle(page)
    assert "Nobody is signed in" in main_text(page) and "USD" not in main_text(page)
    assert page.locator("button", has_text=re.compile("activate", re.I)).count() == 0
    html = page.content()
    page.context.close()
    assert PROXY_SECRET not in html and WRONG_SECRET not in html  # the page says why, never what was sent
    assert PROXY_SECRET not in proxied.log_text() and WRONG_SECRET not in proxied.log_text()
    assert world.rows(pay["cs"]) == []
    assert world.ledger(pay["cs"]) == []


def test_the_proxy_header_with_the_proxys_secret_signs_support_in_and_activates(world, proxied, browser):
    pay = world.pays["proxied"]
    page = through_proxy(
        browser, proxied.url, {PROXY_HEADER: "support@example.com", SECRET_HEADER: PROXY_SECRET}
    )
    assert "support@example.com" in sidebar_text(page) and "proxy header" in sidebar_text(page)
    look_up(page, proxied.url, pay["email"])
    assert "USD 149.00" in main_text(page)
    assert "acting as support@example.com" in activate_through_dialog(page)
    assert PROXY_SECRET not in page.content()
    page.context.close()
    assert world.rows(pay["cs"]) == ["active"]
    assert [(o, outcome) for o, outcome, _ in world.ledger(pay["cs"])] == [
        ("support@example.com", "planned"),
        ("support@example.com", "created"),
    ]


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"TRUSTED_PROXY_HEADER": PROXY_HEADER}, "TRUSTED_PROXY_SECRET is not"),
        ({"TRUSTED_PROXY_HEADER": PROXY_HEADER, "TRUSTED_PROXY_SECRET": "short-CANARY"}, "16 characters"),
    ],
    ids=["no secret", "a short secret"],
)
def test_a_proxy_header_without_a_good_secret_stops_a_command_with_one_line(tmp_path, settings, says):
    env = {
        "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
        "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "MONITOR_CONFIG": str(tmp_path / "none.toml"),
        **settings,
    }
    done = run_cli(["reconcile"], env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert "CANARY" not in done.stdout + done.stderr
    assert not (tmp_path / "monitor.db").exists()
