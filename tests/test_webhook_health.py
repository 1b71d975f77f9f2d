"""Webhook health: the endpoint audit and the webhook finding kinds, on small hand-written tables.

The story is the incident's: the app expects Stripe at production, the endpoint was moved to staging, one
checkout.session.completed is still pending, and the app's manual fallback logged a Redis error.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from monitor.rules.timefmt import format_duration
from monitor.rules.webhook_health import (
    EVENT_COLUMNS,
    LOG_COLUMNS,
    REQUIRED_EVENT_TYPES,
    audit_endpoints,
    delivery_countdowns,
    normalize_url,
    webhook_findings,
)
from tests.stripe_cast import REDIS_ERROR
from tests.table_cast import checkout, payments_frame

NOW = datetime(2026, 11, 26, 13, 5, tzinfo=UTC)
GRACE = timedelta(minutes=10)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
EXPECTED = "https://app.example-saas.com/stripe/webhook"
STAGING = "https://staging.example-saas.com/stripe/webhook"
URL = re.compile(r"https?://[^\s\"'<>]+")


# --- building tables --------------------------------------------------------------------------------------


def endpoint(url: str = EXPECTED, **fields) -> dict:
    """An enabled test-mode endpoint receiving exactly the required types."""
    return {
        "id": "we_1",
        "url": url,
        "status": "enabled",
        "enabled_events": list(REQUIRED_EVENT_TYPES),
        "livemode": False,
        "created": 1_700_000_000,
    } | fields


def event(name: str, *, age: timedelta = 2 * HOUR, **fields) -> dict:
    """checkout.session.completed of cs_{name}, delivered, `age` old, test mode."""
    return {
        "id": f"evt_{name}",
        "type": "checkout.session.completed",
        "created": NOW - age,
        "pending_webhooks": 0,
        "object_id": f"cs_{name}",
        "object_type": "checkout.session",
        "livemode": False,
    } | fields


def logged(
    name: str, status: str = "processed", *, at: timedelta = 2 * HOUR, error: str | None = None
) -> dict:
    """The app's log row for evt_{name}, received `at` before now."""
    return {
        "event_id": f"evt_{name}",
        "type": "checkout.session.completed",
        "received_at": NOW - at,
        "processed_at": pd.NaT if status != "processed" else NOW - at,
        "status": status,
        "error": error,
    }


def frame(rows: list[dict], columns) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def run(events: list[dict], log: list[dict] | None = (), endpoints=None, payments=(), **options):
    options = {"expected_url": EXPECTED, "livemode": None} | options
    return webhook_findings(
        frame(events, EVENT_COLUMNS),
        None if log is None else frame(list(log), LOG_COLUMNS),
        [endpoint()] if endpoints is None else endpoints,
        payments_frame(list(payments)),
        now=NOW,
        grace=GRACE,
        **options,
    )


def keys(findings) -> set[str]:
    return {f.key for f in findings}


def only(findings, kind: str):
    found = [f for f in findings if f.kind == kind]
    assert len(found) == 1, [f.key for f in findings]
    return found[0]


# --- the endpoint audit -----------------------------------------------------------------------------------

AUDITS = {
    "ok_at_expected_url_with_exact_types": ([endpoint()], None, []),
    "ok_with_every_type": ([endpoint(enabled_events=["*"])], None, []),
    "ok_despite_trailing_slash_and_case": (
        [endpoint("HTTPS://App.Example-SaaS.com/stripe/webhook/")],
        None,
        [],
    ),
    "ok_with_default_port": ([endpoint("https://app.example-saas.com:443/stripe/webhook")], None, []),
    "ok_beside_another_endpoint": ([endpoint(), endpoint(STAGING, id="we_2")], None, []),
    "mode_not_judged_when_unknown": ([endpoint(livemode=True)], None, []),
    "disabled_at_expected_url": (
        [endpoint(status="disabled")],
        None,
        [f"the endpoint at {EXPECTED} is disabled"],
    ),
    "disabled_at_expected_url_enabled_elsewhere": (
        [endpoint(status="disabled"), endpoint(STAGING, id="we_2")],
        None,
        [f"the endpoint at {EXPECTED} is disabled", f"Stripe delivers to {STAGING} (enabled) instead"],
    ),
    "endpoint_at_staging": (
        [endpoint(STAGING)],
        None,
        [f"no endpoint at {EXPECTED} (EXPECTED_WEBHOOK_URL); Stripe delivers to {STAGING} (enabled) instead"],
    ),
    "only_disabled_endpoints_elsewhere": (
        [endpoint(STAGING, status="disabled")],
        None,
        [f"no endpoint at {EXPECTED} (EXPECTED_WEBHOOK_URL); Stripe delivers nowhere: {STAGING} is disabled"],
    ),
    "no_endpoint_at_all": (
        [],
        None,
        [f"no endpoint at {EXPECTED} (EXPECTED_WEBHOOK_URL); no webhook endpoint is registered"],
    ),
    "missing_required_types_named": (
        [
            endpoint(
                enabled_events=[
                    t for t in REQUIRED_EVENT_TYPES if t not in ("invoice.paid", "charge.refunded")
                ]
            )
        ],
        None,
        [f"the endpoint at {EXPECTED} does not receive invoice.paid, charge.refunded"],
    ),
    "live_endpoint_test_key": (
        [endpoint(livemode=True)],
        False,
        [f"the endpoint at {EXPECTED} is a live-mode endpoint but the key is a test key"],
    ),
    "test_endpoint_live_key": (
        [endpoint(livemode=False)],
        True,
        [f"the endpoint at {EXPECTED} is a test-mode endpoint but the key is a live key"],
    ),
}


@pytest.mark.parametrize(("endpoints", "livemode", "problems"), AUDITS.values(), ids=AUDITS.keys())
def test_endpoint_audit(endpoints, livemode, problems):
    audit = audit_endpoints(endpoints, expected_url=EXPECTED, livemode=livemode)
    assert audit.configured
    assert audit.problems == problems
    assert audit.ok == (not problems)
    assert (audit.summary == problems[0]) if problems else audit.summary.startswith("ok: ")


def test_audit_lists_each_endpoint_with_its_missing_types_and_whether_it_is_the_expected_one():
    audit = audit_endpoints(
        [endpoint(STAGING), endpoint(EXPECTED + "/", id="we_2", enabled_events=["invoice.paid"])],
        expected_url=EXPECTED,
        livemode=False,
    )
    staging, production = audit.endpoints
    assert (staging["url"], staging["at_expected_url"], staging["missing_types"]) == (STAGING, False, [])
    assert production["at_expected_url"] is True
    assert production["missing_types"] == [t for t in REQUIRED_EVENT_TYPES if t != "invoice.paid"]


def test_ok_summary_names_the_endpoint_and_what_it_receives():
    audit = audit_endpoints([endpoint(enabled_events=["*"])], expected_url=EXPECTED, livemode=False)
    assert audit.summary == f"ok: {EXPECTED} is enabled (test mode) and receives every event type (*)"


def test_not_configured_says_so_and_names_where_stripe_delivers():
    audit = audit_endpoints(
        [endpoint(STAGING), endpoint(EXPECTED, status="disabled")], expected_url=None, livemode=None
    )
    assert (audit.configured, audit.ok, audit.problems) == (False, False, [])
    assert audit.summary == f"EXPECTED_WEBHOOK_URL is not configured; Stripe delivers to: {STAGING} (enabled)"


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTPS://App.Example.com/Hook/", "https://app.example.com/Hook"),
        ("https://app.example.com:443/hook", "https://app.example.com/hook"),
        ("http://app.example.com:80/hook", "http://app.example.com/hook"),
        ("https://app.example.com:8443/hook", "https://app.example.com:8443/hook"),
        (" https://app.example.com/hook/?v=1 ", "https://app.example.com/hook?v=1"),
    ],
)
def test_urls_compare_without_case_of_scheme_and_host_default_port_or_trailing_slash(url, normal):
    assert normalize_url(url) == normal


# --- endpoint_misconfigured ---------------------------------------------------------------------------------


def test_endpoint_at_staging_is_one_finding_naming_both_urls():
    found = run([], endpoints=[endpoint(STAGING)])
    f = only(found, "endpoint_misconfigured")
    assert f.key == f"endpoint_misconfigured:{EXPECTED}"
    assert f.severity == "critical"
    assert STAGING in f.hint and EXPECTED in f.hint
    assert set(URL.findall(f.hint)) == {STAGING, EXPECTED}


def test_every_problem_goes_into_the_one_finding():
    eps = [endpoint(status="disabled", enabled_events=["invoice.paid"]), endpoint(STAGING, id="we_2")]
    f = only(run([], endpoints=eps), "endpoint_misconfigured")
    assert f.hint.startswith(
        f"the endpoint at {EXPECTED} is disabled; the endpoint at {EXPECTED} does not receive"
    )
    assert set(URL.findall(f.hint)) == {STAGING, EXPECTED}


@pytest.mark.parametrize(
    ("endpoints", "expected_url"),
    [([endpoint(STAGING)], None), ([endpoint()], EXPECTED), ([endpoint(STAGING)], "")],
    ids=["not_configured", "ok", "configured_empty"],
)
def test_no_endpoint_finding_when_not_configured_or_ok(endpoints, expected_url):
    assert not [
        f
        for f in run([], endpoints=endpoints, expected_url=expected_url)
        if f.kind == "endpoint_misconfigured"
    ]


# --- the webhook kinds ---------------------------------------------------------------------------------------

WEBHOOK_CASES = {
    "pending_older_than_grace_is_undelivered": (
        [event("a", pending_webhooks=1)],
        [logged("a")],
        {"webhook_undelivered:evt_a"},
    ),
    "pending_within_grace_is_nothing": (
        [event("a", age=timedelta(minutes=5), pending_webhooks=1)],
        [],
        set(),
    ),
    "pending_event_of_other_type_is_nothing": (
        [event("a", type="customer.updated", pending_webhooks=2)],
        [],
        set(),
    ),
    "delivered_and_processed_is_nothing": ([event("a")], [logged("a")], set()),
    "failure_then_later_success_is_nothing": (
        [event("a")],
        [logged("a", "failed", at=2 * HOUR, error=REDIS_ERROR), logged("a", at=HOUR)],
        set(),
    ),
    "success_then_later_failure_is_failed": (
        [event("a")],
        [logged("a", at=2 * HOUR), logged("a", "failed", at=HOUR, error="boom")],
        {"webhook_failed:evt_a"},
    ),
    "failure_only_is_failed": (
        [event("a")],
        [logged("a", "failed", error=REDIS_ERROR)],
        {"webhook_failed:evt_a"},
    ),
    "failure_of_event_not_synced_judged_by_log_type": (
        [],
        [logged("a", "failed", error="boom")],
        {"webhook_failed:evt_a"},
    ),
    "failure_of_other_type_is_nothing": (
        [event("a", type="customer.updated")],
        [logged("a", "failed", error="boom")],
        set(),
    ),
    "fresh_row_without_error_is_still_processing": (
        [event("a")],
        [logged("a", "received", at=timedelta(minutes=1))],
        set(),
    ),
    "old_row_without_error_is_failed": (
        [event("a")],
        [logged("a", "received", at=HOUR)],
        {"webhook_failed:evt_a"},
    ),
    "delivered_but_never_logged_is_missing": ([event("a")], [], {"webhook_missing:evt_a"}),
    "delivered_type_no_enabled_endpoint_receives_is_nothing": (
        [event("a", type="charge.dispute.closed")],
        [],
        set(),
    ),
    "delivered_within_grace_is_nothing": ([event("a", age=timedelta(minutes=3))], [], set()),
    "delivered_non_payment_type_is_nothing": ([event("a", type="customer.created")], [], set()),
    "pending_and_never_logged_is_only_undelivered": (
        [event("a", pending_webhooks=1)],
        [],
        {"webhook_undelivered:evt_a"},
    ),
    "incident_is_undelivered_and_failed": (
        [event("a", pending_webhooks=1)],
        [logged("a", "failed", error=REDIS_ERROR)],
        {"webhook_undelivered:evt_a", "webhook_failed:evt_a"},
    ),
}


@pytest.mark.parametrize(("events", "log", "expected"), WEBHOOK_CASES.values(), ids=WEBHOOK_CASES.keys())
def test_webhook_kinds(events, log, expected):
    assert keys(run(events, log)) == expected


@pytest.mark.parametrize(
    "events",
    [[event("a")], [event("a", pending_webhooks=1)]],
    ids=["delivered", "pending"],
)
def test_without_an_app_log_only_undelivered_is_judged(events):
    found = run(events, log=None)
    assert {f.kind for f in found} <= {"webhook_undelivered"}


@pytest.mark.parametrize(
    ("endpoints", "event_type", "expected"),
    [
        ([endpoint(enabled_events=["*"])], "charge.dispute.closed", {"webhook_missing:evt_a"}),
        ([endpoint()], "charge.dispute.closed", set()),
        ([endpoint(STAGING, status="disabled")], "invoice.paid", set()),
        ([endpoint(livemode=True)], "invoice.paid", set()),
        ([endpoint(STAGING)], "invoice.paid", {"webhook_missing:evt_a"}),
    ],
    ids=[
        "type_received_through_star",
        "type_no_endpoint_receives",
        "only_a_disabled_endpoint",
        "endpoint_of_the_other_mode",
        "enabled_elsewhere",
    ],
)
def test_missing_needs_an_enabled_endpoint_of_the_events_mode_that_receives_its_type(
    endpoints, event_type, expected
):
    found = run([event("a", type=event_type)], [], endpoints)
    assert {f.key for f in found if f.kind == "webhook_missing"} == expected


# --- hints and fields -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("livemode", "countdown"),
    [
        (True, "Stripe stops retrying in 2 d 21 h (live mode)"),
        (False, "test mode: Stripe retries only a few times over a few hours"),
    ],
    ids=["live", "test"],
)
def test_undelivered_hint_gives_the_countdowns_and_the_payment(livemode, countdown):
    evt = event("a", age=2 * HOUR + timedelta(minutes=3, seconds=20), pending_webhooks=1, livemode=livemode)
    f = only(run([evt], [], payments=[checkout("a")]), "webhook_undelivered")
    assert f.hint == (
        f"checkout.session.completed evt_a pending at 1 endpoint for 2 h 3 min; {countdown}; "
        "leaves the 30-day Events list in 29 d 21 h; payment cs_a: USD 149.00, a@example.com"
    )
    assert (f.payment_id, f.payment_intent_id, f.customer_id, f.amount, f.currency) == (
        "cs_a",
        "pi_a",
        "cus_a",
        14900,
        "usd",
    )
    assert (f.event_id, f.occurred_at, f.severity) == ("evt_a", evt["created"], "critical")


def test_undelivered_past_the_retry_window_says_stripe_stopped():
    f = only(run([event("a", age=4 * DAY, pending_webhooks=2, livemode=True)], []), "webhook_undelivered")
    assert f.hint == (
        "checkout.session.completed evt_a pending at 2 endpoints for 4 d; Stripe has stopped retrying "
        "(live mode: 3 days); leaves the 30-day Events list in 26 d"
    )


def test_failed_hint_quotes_the_apps_error_word_for_word():
    log = [logged("a", "failed", at=timedelta(hours=2, minutes=7), error=REDIS_ERROR)]
    f = only(run([event("a")], log, payments=[checkout("a")]), "webhook_failed")
    assert f.hint == (
        f"checkout.session.completed evt_a; app log: failed at 10:58 UTC: “{REDIS_ERROR}”; "
        "payment cs_a: USD 149.00, a@example.com"
    )
    assert (f.severity, f.payment_id, f.event_id) == ("critical", "cs_a", "evt_a")


def test_failed_hint_counts_the_attempts():
    log = [logged("a", "failed", at=3 * HOUR, error="one"), logged("a", "failed", at=2 * HOUR, error="two")]
    f = only(run([event("a")], log), "webhook_failed")
    assert f.hint.endswith("failed at 11:05 UTC: “two” (2 attempts logged)")


def test_missing_hint_names_where_stripe_delivers_and_the_expected_url():
    f = only(run([event("a")], [], [endpoint(STAGING)], payments=[checkout("a")]), "webhook_missing")
    assert f.severity == "warning"
    assert f.hint == (
        "checkout.session.completed evt_a of 11:05 UTC is delivered according to Stripe, but the app's webhook "
        "log has no record of it; payment cs_a: USD 149.00, a@example.com; Stripe delivers "
        f"checkout.session.completed to {STAGING} while EXPECTED_WEBHOOK_URL is {EXPECTED}"
    )
    assert set(URL.findall(f.hint)) == {STAGING, EXPECTED}


@pytest.mark.parametrize(
    ("evt", "pay", "payment_id"),
    [
        (event("a", object_id="cs_a"), checkout("a", event_id=None), "cs_a"),
        (
            event("a", object_id="in_a", type="invoice.paid"),
            checkout("a", payment_id="in_a", invoice_id="in_a", event_id=None),
            "in_a",
        ),
        (event("a", object_id="pi_a", type="payment_intent.succeeded"), checkout("a", event_id=None), "cs_a"),
        (event("a", object_id="ch_a", type="charge.refunded"), checkout("a"), "cs_a"),
        (event("a", object_id="ch_a", type="charge.refunded"), checkout("a", event_id=None), None),
    ],
    ids=["by_session", "by_invoice", "by_intent", "by_event_id", "unknown"],
)
def test_the_payment_an_event_is_about(evt, pay, payment_id):
    f = only(run([evt | {"pending_webhooks": 1}], None, payments=[pay]), "webhook_undelivered")
    assert f.payment_id == payment_id
    assert (f.hint.endswith("USD 149.00, a@example.com")) == (payment_id is not None)


def test_inputs_are_not_modified():
    events, log = (
        frame([event("a", pending_webhooks=1)], EVENT_COLUMNS),
        frame([logged("a", "failed")], LOG_COLUMNS),
    )
    before = (events.copy(), log.copy())
    webhook_findings(
        events, log, [endpoint()], None, now=NOW, grace=GRACE, expected_url=EXPECTED, livemode=None
    )
    pd.testing.assert_frame_equal(events, before[0])
    pd.testing.assert_frame_equal(log, before[1])


# --- countdowns and durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "livemode", "retry", "listed"),
    [
        (HOUR, True, 3 * DAY - HOUR, 30 * DAY - HOUR),
        (HOUR, False, None, 30 * DAY - HOUR),
        (5 * DAY, True, timedelta(0), 25 * DAY),
        (31 * DAY, True, timedelta(0), timedelta(0)),
        (31 * DAY, False, None, timedelta(0)),
    ],
    ids=["live_fresh", "test_fresh", "live_retries_over", "live_gone_from_events", "test_gone_from_events"],
)
def test_delivery_countdowns_clamp_at_zero(age, livemode, retry, listed):
    assert delivery_countdowns(NOW - age, now=NOW, livemode=livemode) == (retry, listed)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0 s"),
        (45, "45 s"),
        (3 * 60 + 59, "3 min"),
        (2 * 3600, "2 h"),
        (2 * 3600 + 3 * 60 + 20, "2 h 3 min"),
        (2 * 86400 + 21 * 3600 + 57 * 60, "2 d 21 h"),
        (4 * 86400, "4 d"),
    ],
)
def test_durations_are_written_one_way(seconds, text):
    assert format_duration(timedelta(seconds=seconds)) == text
