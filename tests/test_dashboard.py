"""Every screen of the dashboard through streamlit.testing.v1.AppTest, in-process, on the demo synced,
reconciled and probed once per module. Tests that change data work on their own copy of the databases.

The settings reach the app through os.environ (monkeypatch.setenv), as `streamlit run` would see them.
"""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from monitor import actions, pipeline, repair, store
from monitor.config import SETTINGS, load
from monitor.emulator.demo import DEMO_STAGING_WEBHOOK_URL, INCIDENT_EMAIL
from tests.stripe_cast import REDIS_ERROR
from ui.text import md_code, md_escape, neutralise_cell, to_csv

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = REPO_ROOT / "dashboard.py"
PAGES = (
    "pages/1_Discrepancies.py",
    "pages/2_Customer_lookup.py",
    "pages/3_Webhooks.py",
    "pages/4_Infrastructure.py",
    "pages/5_Finance.py",
    "pages/6_Audit_log.py",
)
TIMEOUT = 60


def urls(where: Path) -> dict[str, str]:
    return {
        "MONITOR_DATABASE_URL": f"sqlite:///{where / 'monitor.db'}",
        "APP_DATABASE_URL": f"sqlite:///{where / 'app.db'}",
        # Two hours before the demo's probes count as stale: the dashboard does not re-run the demo's checks
        # in the middle of the tests (test_a_demo_only_synced_is_brought_up_to_date_once covers that).
        "PROBE_INTERVAL": "3600",
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A directory with the demo's store and app database, synced, reconciled and probed."""
    where = tmp_path_factory.mktemp("dashboard")
    config = load(urls(where), toml_path=where / "no-monitor.toml")
    engine = store.open_store(config.monitor_database_url)
    try:
        pipeline.run_sync(config, engine)
        pipeline.run_reconcile(config, engine)
    finally:
        engine.dispose()
    pipeline.run_check(config)
    return where


@pytest.fixture
def use(monkeypatch, tmp_path):
    """use(where, **settings): the app's environment is the demo in `where` plus `settings`, and nothing else
    of the monitor's (no developer's STRIPE_API_KEY or monitor.toml leaks in)."""

    def apply(where: Path, **settings: str) -> None:
        for name in {s.name for s in SETTINGS} | {"TRUSTED_PROXY_HEADER"}:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MONITOR_CONFIG", str(tmp_path / "no-monitor.toml"))
        for name, value in {**urls(where), **settings}.items():
            monkeypatch.setenv(name, value)

    return apply


@pytest.fixture
def own_copy(demo, tmp_path) -> Path:
    """A copy of the demo's databases for a test that changes them."""
    for name in ("monitor.db", "app.db"):
        source, target = sqlite3.connect(demo / name), sqlite3.connect(tmp_path / name)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
    return tmp_path


def open_page(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=TIMEOUT)
    if page is None:
        at.query_params.update(query)
        return at.run()
    at.run()
    at.switch_page(page)
    at.query_params.update(query)
    return at.run()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def unescaped(text: str) -> str:
    return text.replace("\\", "").replace("`", "").replace("**", "")


def all_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [t.value for t in at.text] + [c.value for c in at.caption]
    parts += [e.value for e in (*at.error, *at.warning, *at.info, *at.success)]
    return unescaped("\n".join(parts))


def _incident(where: Path, column: str) -> str:
    """A column of the demo's USD 149 finding (paid, and no subscription) in the store at `where`."""
    con = sqlite3.connect(where / "monitor.db")
    try:
        return con.execute(
            f"SELECT {column} FROM findings WHERE kind = 'paid_without_subscription' AND customer_email = ?",
            (INCIDENT_EMAIL,),
        ).fetchone()[0]
    finally:
        con.close()


def incident_payment(where: Path) -> str:
    return _incident(where, "payment_id")


def rows_for(where: Path, payment_id: str) -> list[tuple]:
    con = sqlite3.connect(where / "app.db")
    try:
        return con.execute(
            "SELECT id, status FROM subscriptions WHERE stripe_checkout_session_id = ?", (payment_id,)
        ).fetchall()
    finally:
        con.close()


# --- every screen ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_without_an_exception(demo, use, page):
    use(demo)
    no_exception(open_page(page))


@pytest.mark.parametrize("page", [None, *PAGES])
def test_every_page_says_when_the_snapshot_lacks_a_list_stripe_refused(own_copy, use, page):
    """A list Stripe refused (a restricted key without Checkout Sessions: read) and never synced: every page
    carries the banner with Stripe's words and what the last reconcile did not judge."""
    con = sqlite3.connect(own_copy / "monitor.db")
    try:
        con.execute("DELETE FROM sync_state WHERE resource = 'checkout_sessions'")
        con.execute(
            "UPDATE sync_resources SET ok_at = NULL, failed_at = '2026-12-01 10:00:00', error = 'refused (403)', "
            "http_status = 403, permission = 'Checkout Sessions: read' WHERE resource = 'checkout_sessions'"
        )
        con.execute(
            "UPDATE job_runs SET counts = json_set(counts, '$.held_back.active_without_payment', "
            "'2 rows naming ids not synced') WHERE job = 'reconcile'"
        )
        con.commit()
    finally:
        con.close()
    use(own_copy)
    at = open_page(page)
    no_exception(at)
    banner = unescaped("\n".join(w.value for w in at.warning))
    assert "The Stripe snapshot is incomplete" in banner
    assert (
        'checkout_sessions never synced completely: the API key lacks the permission "Checkout Sessions: read"'
        in banner
    )
    assert "not judged: active_without_payment: 2 rows naming ids not synced" in banner


def test_a_complete_snapshot_shows_no_banner(demo, use):
    use(demo)
    at = open_page()
    assert "snapshot is incomplete" not in all_text(at)


def test_the_overview_shows_redis_down_and_the_usd_149_customer(demo, use):
    use(demo)
    at = open_page()
    no_exception(at)
    errors = unescaped(" ".join(e.value for e in at.error))
    assert f"redis:channels is down: {REDIS_ERROR}" in errors
    assert "webhook_endpoint is down" in errors and DEMO_STAGING_WEBHOOK_URL in errors
    headlines = [unescaped(m.value) for m in at.markdown if "paid by" in m.value]
    assert any("USD 149.00" in h and INCIDENT_EMAIL in h and "no subscription row" in h for h in headlines)
    assert {m.label for m in at.metric} >= {"Open findings", "Critical", "At risk (USD)"}


def test_a_demo_only_synced_is_brought_up_to_date_once(tmp_path, use):
    """What a new user does: `python -m monitor sync`, then open the dashboard (no reconcile, no check)."""
    config = load(urls(tmp_path), toml_path=tmp_path / "no-monitor.toml")
    engine = store.open_store(config.monitor_database_url)
    try:
        pipeline.run_sync(config, engine)
    finally:
        engine.dispose()
    use(tmp_path)
    at = open_page()
    no_exception(at)
    assert REDIS_ERROR in unescaped(" ".join(e.value for e in at.error))
    assert "USD 149.00" in all_text(at)


def test_discrepancies_lists_findings_and_filters_them_in_sql(demo, use):
    use(demo)
    at = open_page(PAGES[0])
    table = at.dataframe[0].value
    assert "paid_without_subscription" in set(table["kind"])
    assert len(table) == 50  # one page of the demo's 60-odd findings
    at.text_input(key="search").input(INCIDENT_EMAIL).run()
    no_exception(at)
    table = at.dataframe[0].value
    assert set(table["customer_email"]) == {INCIDENT_EMAIL}


def test_two_stores_served_by_one_process_do_not_share_their_cached_findings(demo, own_copy, use):
    with sqlite3.connect(own_copy / "monitor.db") as conn:
        conn.execute("UPDATE findings SET status = 'resolved', resolved_at = last_seen")
    use(demo)
    assert "No finding matches these filters." not in all_text(open_page(PAGES[0]))
    use(own_copy)  # the same filters and page, within the cache's TTL: only the databases differ
    at = open_page(PAGES[0])
    no_exception(at)
    assert "No finding matches these filters." in all_text(at)


def incident_finding(where: Path) -> str:
    return _incident(where, "id")


def test_a_finding_shows_both_sides_its_hint_and_activate(demo, use):
    use(demo)
    at = open_page(PAGES[0], finding=incident_finding(demo))
    no_exception(at)
    assert any(REDIS_ERROR in unescaped(w.value) for w in at.warning)  # the root-cause hint
    assert {"Stripe side", "App side", "Timeline"} <= {s.value for s in at.subheader}
    assert [b.label for b in at.button if b.key and b.key.startswith("disc:activate")] == ["Activate"]


def test_looking_up_the_incident_email_shows_the_payment_and_activate(demo, use):
    use(demo)
    at = open_page(PAGES[1])
    at.text_input(key="q").input(INCIDENT_EMAIL.upper()).run()
    no_exception(at)
    payment_id = incident_payment(demo)
    payments = next(df.value for df in at.dataframe if "source" in df.value.columns)
    assert any(payment_id in str(v) for v in payments["payment"])
    activate = [b for b in at.button if b.label == "Activate"]
    assert len(activate) == 1 and not activate[0].disabled


def test_the_lookup_box_is_hostile_input_and_finds_nothing_for_sql(demo, use):
    use(demo)
    at = open_page(PAGES[1])
    for query in ("' OR 1=1 --", "%", "x@y' OR '1'='1", "1; DROP TABLE subscriptions"):
        at.text_input(key="q").input(query).run()
        no_exception(at)
        assert any("Nothing is known" in w.value for w in at.warning), query
        assert not at.dataframe


def test_activating_through_the_dialog_creates_one_row_and_a_ledger_entry(own_copy, use):
    use(own_copy)
    payment_id = incident_payment(own_copy)
    assert rows_for(own_copy, payment_id) == []
    at = open_page(PAGES[1], q=INCIDENT_EMAIL)
    print(
        [b.label for b in at.button],
        [e.value for e in at.error],
        [w.value for w in at.warning],
        [t.value for t in at.text_input],
    )
    next(b for b in at.button if b.label == "Activate").click().run()
    no_exception(at)
    assert any("would create an active row" in i.value for i in at.info)  # the dry-run plan
    assert rows_for(own_copy, payment_id) == []  # a plan changes nothing
    at.button(key="activate:confirm").click().run()
    no_exception(at)
    assert [status for _, status in rows_for(own_copy, payment_id)] == ["active"]
    assert any("Created" in s.value for s in at.success)

    at.button(key="activate:reconcile").click().run()
    no_exception(at)
    assert any("no open activation finding any more" in s.value for s in at.success)
    log = open_page(PAGES[5])
    repairs = next(df.value for df in log.dataframe if "outcome" in df.value.columns)
    assert list(repairs["outcome"][:2]) == ["created", "planned"]


def test_a_viewer_sees_no_working_activate_and_is_refused_anyway(own_copy, use):
    use(own_copy, OPERATOR_ROLES="demo-operator=viewer,someone@example.com=support")
    payment_id = incident_payment(own_copy)
    at = open_page(PAGES[1], q=INCIDENT_EMAIL)
    no_exception(at)
    activate = next(b for b in at.button if b.label == "Activate")
    assert activate.disabled
    at.session_state["activate:open"] = payment_id  # as if the disabled button had been clicked anyway
    at.run()
    assert any("refused" in e.value and "viewer" in e.value for e in at.error)
    assert not any(b.key == "activate:confirm" for b in at.button)
    result = repair.activate(load(), payment_id, "demo-operator")
    assert result.outcome == "refused"
    assert rows_for(own_copy, payment_id) == []


def test_without_sign_in_outside_the_demo_the_dashboard_is_read_only(own_copy, use):
    use(own_copy, STRIPE_API_KEY="sk_test_readonlycheck")
    at = open_page(PAGES[1], q=INCIDENT_EMAIL)
    no_exception(at)
    assert any("Read-only" in w.value for w in at.warning)
    assert all(b.disabled for b in at.button if b.label == "Activate")


def job_runs_since(where: Path, after: int) -> list[tuple]:
    con = sqlite3.connect(where / "monitor.db")
    try:
        return con.execute(
            "SELECT job, outcome, error, counts FROM job_runs WHERE id > ? ORDER BY id", (after,)
        ).fetchall()
    finally:
        con.close()


def last_job_run(where: Path) -> int:
    con = sqlite3.connect(where / "monitor.db")
    try:
        return con.execute("SELECT coalesce(max(id), 0) FROM job_runs").fetchone()[0]
    finally:
        con.close()


def test_without_sign_in_run_checks_now_is_off_says_why_and_the_monitor_refuses_it_on_record(own_copy, use):
    use(own_copy, STRIPE_API_KEY="sk_test_readonlycheck")
    at = open_page()
    no_exception(at)
    button = at.button(key="run-checks")
    assert button.disabled
    assert "nobody is signed in" in all_text(at)  # said beside the button, not only in its tooltip
    before = last_job_run(own_copy)
    with pytest.raises(actions.Forbidden, match="nobody is signed in"):
        actions.run_checks_now(
            load(), lambda step, fraction: None
        )  # the monitor function itself, no operator
    runs = job_runs_since(own_copy, before)
    assert [(job, outcome) for job, outcome, _, _ in runs] == [("action:run-checks", "failed")]  # nothing ran
    assert "nobody is signed in" in runs[0][2]
    log = open_page(PAGES[5])
    no_exception(log)
    shown = next(df.value for df in log.dataframe if "job" in df.value.columns)
    refused = shown[shown["job"] == "action:run-checks"]
    assert len(refused) == 1 and refused.iloc[0]["outcome"] == "failed"
    assert "nobody is signed in" in refused.iloc[0]["error"]


def test_a_viewer_cannot_run_checks_now_and_the_monitor_refuses_it_on_record(own_copy, use):
    use(
        own_copy,
        OPERATOR_ROLES="demo-operator=viewer,finance@example.com=finance,support@example.com=support",
    )
    at = open_page()
    no_exception(at)
    assert at.button(key="run-checks").disabled
    assert "demo-operator (viewer) may not run the checks now" in all_text(at)
    before = last_job_run(own_copy)
    for who in ("demo-operator", "finance@example.com", "stranger@example.com"):
        with pytest.raises(actions.Forbidden, match=f"{who} may not run the checks now"):
            actions.run_checks_now(load(), lambda step, fraction: None, operator=who)
    runs = job_runs_since(own_copy, before)
    assert [(job, outcome) for job, outcome, _, _ in runs] == [("action:run-checks", "failed")] * 3
    assert ["demo-operator" in runs[0][3], "finance@example.com" in runs[1][3]] == [True, True]


def test_acknowledging_keeps_the_finding_visible_with_its_note(own_copy, use):
    use(own_copy)
    con = sqlite3.connect(own_copy / "monitor.db")
    finding_id = con.execute("SELECT id FROM findings WHERE kind = 'amount_mismatch'").fetchone()[0]
    con.close()
    at = open_page(PAGES[0], finding=finding_id)
    at.text_input(key=f"ack:note:{finding_id}").input("price change agreed, ticket #42")
    at.button(key=f"ack:submit:{finding_id}").click().run()
    no_exception(at)
    con = sqlite3.connect(own_copy / "monitor.db")
    status, note, by = con.execute(
        "SELECT status, ack_note, ack_by FROM findings WHERE id = ?", (finding_id,)
    ).fetchone()
    con.close()
    assert (status, note, by) == ("acknowledged", "price change agreed, ticket #42", "demo-operator")


def test_run_checks_now_syncs_reconciles_and_probes_with_progress(own_copy, use):
    use(own_copy)
    at = open_page()
    at.button(key="run-checks").click().run()
    no_exception(at)
    done = unescaped(" ".join(s.value for s in at.success))
    assert "Checks done: verdict CRITICAL" in done
    con = sqlite3.connect(own_copy / "monitor.db")
    jobs = [j for (j,) in con.execute("SELECT job FROM job_runs ORDER BY id DESC LIMIT 2")]
    asked = con.execute("SELECT outcome, counts FROM job_runs WHERE job = 'action:run-checks'").fetchall()
    con.close()
    assert jobs == ["reconcile", "sync"]
    assert len(asked) == 1 and asked[0][0] == "ok" and '"operator": "demo-operator"' in asked[0][1]


def test_webhooks_shows_the_staging_url_beside_the_expected_one(demo, use):
    use(demo)
    at = open_page(PAGES[2])
    no_exception(at)
    codes = [c.value for c in at.code]
    assert any(DEMO_STAGING_WEBHOOK_URL in c for c in codes)
    assert any("https://app.example-saas.com/stripe/webhook" in c for c in codes)


def test_infrastructure_shows_the_redis_error_now_and_as_an_outage(demo, use):
    use(demo)
    at = open_page(PAGES[3])
    no_exception(at)
    assert any(REDIS_ERROR in unescaped(e.value) for e in at.error)
    outages = next(df.value for df in at.dataframe if "error" in df.value.columns)
    assert REDIS_ERROR in set(outages["error"])


def test_finance_shows_parity_and_offers_every_table_as_csv(demo, use):
    use(demo)
    at = open_page(PAGES[4])
    no_exception(at)
    parity = at.dataframe[0].value
    assert {"period_start", "payments", "paid_amount_major", "parity_pct"} <= set(parity.columns)
    assert len(at.get("download_button")) == 4
    at.segmented_control(key="period").set_value("Month").run()
    no_exception(at)


def test_the_audit_log_shows_operator_actions_and_background_checks_behind_a_filter(demo, use):
    use(demo)
    at = open_page(PAGES[5])
    no_exception(at)
    runs = [df.value for df in at.dataframe if "job" in df.value.columns]
    assert not runs or not ({"sync", "reconcile"} & set(runs[0]["job"]))  # operators' actions only
    at.toggle(key="background").set_value(True).run()
    no_exception(at)
    runs = next(df.value for df in at.dataframe if "job" in df.value.columns)
    assert {"sync", "reconcile"} <= set(runs["job"])
    assert "counts" not in runs.columns  # readable columns, not JSON
    reconcile = runs[runs["job"] == "reconcile"].iloc[0]
    assert "parity_pct: " in reconcile["details"] and "{" not in reconcile["details"]


# --- hostile text, CSV, Streamlit's settings ------------------------------------------------------------

HOSTILE = '<img src=x onerror="window.__xss=2"> **bold** [link](javascript:alert(1)) :red[x] $x$ `code`'


def test_markdown_escaping_shows_hostile_text_as_typed():
    escaped = md_escape(HOSTILE, None)
    assert escaped.replace("\\", "") == HOSTILE
    for special in "<>*[]()`:$":
        assert all(escaped[i - 1] == "\\" for i, ch in enumerate(escaped) if ch == special)
    assert md_code("a`b") == "``a`b``"
    assert len(md_escape("A" * 10_000)) <= 300


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("dana@example.com", "dana@example.com"),
        (-5, -5),
    ],
)
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(cell, written):
    assert neutralise_cell(cell) == written


def test_csv_export_neutralises_text_columns_and_keeps_numbers():
    csv = to_csv(pd.DataFrame({"email": ["=cmd|' /C calc'!A0", "ok@example.com"], "amount": [-149.0, 149.0]}))
    lines = csv.decode().splitlines()
    assert lines[1] == "'=cmd|' /C calc'!A0,-149.0"
    assert lines[2] == "ok@example.com,149.0"


def test_streamlit_keeps_cors_and_xsrf_on_and_a_minimal_toolbar():
    settings = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["enableCORS"] is True
    assert settings["server"]["enableXsrfProtection"] is True
    assert settings["client"]["toolbarMode"] == "minimal"
    assert settings["runner"]["magicEnabled"] is False
