"""Incidents: open findings grouped by their cause, on small tables of the cast's findings; and the Overview's
status line those incidents sit under (monitor.views.status.status_line), as a table.

The story is issue 16's: redis:channels is down 12:41–13:05 UTC, the customers who paid in that window were
never activated and the app's log holds the Redis error for each of their events; on some days the endpoint
also points at staging.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from monitor.rules.findings import Finding
from monitor.rules.incidents import (
    APP_ERROR,
    ENDPOINT,
    OUTAGE,
    UNKNOWN,
    Incident,
    OpenFinding,
    find_incidents,
    incident_id,
    log_failures,
    open_finding,
    signature,
)
from monitor.rules.outages import Outage
from monitor.rules.webhook_health import LOG_COLUMNS
from monitor.views.status import FindingsSummary, StatusLine, status_line
from tests.stripe_cast import REDIS_ERROR
from tests.table_cast import EXPECTED_WEBHOOK_URL, finding

NOW = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
REDIS = "redis:channels"
STAGING = "https://staging.example-saas.com/stripe/webhook"


def at(hhmm: str) -> datetime:
    hour, minute = map(int, hhmm.split(":"))
    return datetime(2026, 11, 26, hour, minute, tzinfo=UTC)


REDIS_DOWN = Outage(REDIS, at("12:41"), at("13:05"), REDIS_ERROR, "down")


def seen(f: Finding, *, first_seen: str = "13:30", last_seen: str = "13:55") -> OpenFinding:
    return OpenFinding(id=f"{f.kind}:{f.key}", finding=f, first_seen=at(first_seen), last_seen=at(last_seen))


def unpaid(name: str, paid: str, *, first_seen: str = "13:30", **fields) -> OpenFinding:
    """Customer `name` paid USD 149 at `paid` and has no subscription row."""
    f = finding(name, "paid_without_subscription", occurred_at=at(paid), **fields)
    return seen(f, first_seen=first_seen)


def inactive(name: str, paid: str, **fields) -> OpenFinding:
    return seen(finding(name, "subscription_not_active", occurred_at=at(paid), **fields))


def webhook(name: str, kind: str, paid: str, **fields) -> OpenFinding:
    """A webhook finding about the event of `name`'s payment, as webhook health makes it."""
    about = {"payment_id": f"cs_{name}", "customer_id": f"cus_{name}", "amount": 14900, "currency": "usd"}
    return seen(finding(name, kind, occurred_at=at(paid), **(about | fields)))


def endpoint_problem(first_seen: str = "13:30") -> OpenFinding:
    hint = (
        f"no endpoint at {EXPECTED_WEBHOOK_URL} (EXPECTED_WEBHOOK_URL); Stripe delivers to {STAGING} instead"
    )
    return seen(finding(kind="endpoint_misconfigured", hint=hint), first_seen=first_seen)


def redis_failures(*names: str) -> dict[str, str]:
    return {f"evt_{n}": REDIS_ERROR for n in names}


def summary(incidents: list[Incident]) -> list[tuple]:
    return [(i.cause.kind, i.cause.component, i.customer_keys) for i in incidents]


MANY = [f"c{n:02}" for n in range(12)]


def every_2_min(i: int) -> str:
    """The i-th payment of the outage, from 12:41 on."""
    return f"{at('12:41') + timedelta(minutes=2 * i):%H:%M}"


# name: (findings, outages, app-log failures, [(cause kind, component, customers)] in the order listed)
STORIES = {
    "one_outage_across_many_customers": (
        [unpaid(n, every_2_min(i)) for i, n in enumerate(MANY)]
        + [webhook(n, "webhook_failed", every_2_min(i)) for i, n in enumerate(MANY)],
        [REDIS_DOWN],
        {},
        [(OUTAGE, REDIS, tuple(f"cus_{n}" for n in MANY))],
    ),
    "a_payment_outside_the_window_has_no_known_cause": (
        [unpaid("dana", "12:50"), unpaid("erin", "09:00")],
        [REDIS_DOWN],
        {},
        [(OUTAGE, REDIS, ("cus_dana",)), (UNKNOWN, None, ("cus_erin",))],
    ),
    "a_payment_just_before_the_outage_is_in_it_as_its_hint_says": (
        [unpaid("dana", "12:20"), unpaid("erin", "12:00"), unpaid("fay", "13:12"), unpaid("gus", "13:20")],
        [REDIS_DOWN],
        {},
        [(OUTAGE, REDIS, ("cus_dana", "cus_fay")), (UNKNOWN, None, ("cus_erin", "cus_gus"))],
    ),
    "an_ongoing_outage_reaches_until_now": (
        [unpaid("dana", "13:50")],
        [Outage(REDIS, at("12:41"), None, REDIS_ERROR, "down")],
        {},
        [(OUTAGE, REDIS, ("cus_dana",))],
    ),
    "the_monitors_own_database_down_is_no_cause": (
        [unpaid("dana", "12:50")],
        [Outage("monitor_db", at("12:41"), at("13:05"), "disk full", "down")],
        {},
        [(UNKNOWN, None, ("cus_dana",))],
    ),
    "an_outage_without_findings_is_no_incident": (
        [unpaid("dana", "09:00")],
        [REDIS_DOWN],
        {},
        [(UNKNOWN, None, ("cus_dana",))],
    ),
    "an_outage_and_an_endpoint_problem_on_the_same_payments_list_each_customer_in_both": (
        [unpaid("dana", "12:50"), unpaid("erin", "12:55"), endpoint_problem()]
        + [
            webhook(n, "webhook_missing", t)
            for n, t in (("dana", "12:50"), ("erin", "12:55"), ("fay", "10:00"))
        ],
        [REDIS_DOWN],
        {},
        [
            (OUTAGE, REDIS, ("cus_dana", "cus_erin")),
            (ENDPOINT, "webhook_endpoint", ("cus_dana", "cus_erin", "cus_fay")),
        ],
    ),
    "undelivered_events_belong_to_the_endpoint_problem": (
        [endpoint_problem(), webhook("dana", "webhook_undelivered", "09:00"), unpaid("dana", "09:00")],
        [],
        {},
        [(ENDPOINT, "webhook_endpoint", ("cus_dana",))],
    ),
    "webhook_missing_without_an_endpoint_problem_has_no_known_cause": (
        [webhook("dana", "webhook_missing", "09:00")],
        [],
        {},
        [(UNKNOWN, None, ("cus_dana",))],
    ),
    "one_app_error_signature_holds_its_failures_and_their_payments": (
        [webhook(n, "webhook_failed", "09:00") for n in ("dana", "erin", "fay")]
        + [unpaid("dana", "09:00"), inactive("gus", "09:00")],
        [],
        {
            "evt_dana": "Error 111 connecting to 10.0.0.7:6379. Connection refused.",
            "evt_erin": "Error 111 connecting to 10.0.0.12:6379. Connection refused.",
            "evt_fay": 'relation "accounts_subscription" does not exist',
        },
        [
            (APP_ERROR, None, ("cus_dana", "cus_erin")),
            (APP_ERROR, None, ("cus_fay",)),
            (UNKNOWN, None, ("cus_gus",)),
        ],
    ),
    "the_same_failures_in_an_outage_are_in_both_incidents": (
        [unpaid(n, "12:50") for n in ("dana", "erin")]
        + [webhook(n, "webhook_failed", "12:50") for n in ("dana", "erin")],
        [REDIS_DOWN],
        redis_failures("dana", "erin"),
        [(OUTAGE, REDIS, ("cus_dana", "cus_erin")), (APP_ERROR, None, ("cus_dana", "cus_erin"))],
    ),
    "no_cause_is_one_unknown_incident": (
        [unpaid("dana", "09:00"), inactive("erin", "10:00"), seen(finding("fay", "active_without_payment"))],
        [],
        {},
        [(UNKNOWN, None, ("cus_dana", "cus_erin", "cus_fay"))],
    ),
    "no_findings_no_incidents": ([], [REDIS_DOWN], {}, []),
}


@pytest.mark.parametrize("story", STORIES.values(), ids=STORIES.keys())
def test_findings_are_grouped_by_their_cause(story):
    findings, outages, failures, expected = story
    assert summary(find_incidents(findings, outages, now=NOW, failures=failures)) == expected


def test_an_outage_incident_adds_up_its_customers_money_and_payments():
    findings = STORIES["one_outage_across_many_customers"][0]
    (incident,) = find_incidents(findings, [REDIS_DOWN], now=NOW)
    assert incident.customers == 12
    assert incident.amount_at_risk == {"usd": 12 * 14900}
    assert incident.recoverable == 12  # the webhook findings are closed by the repair, not recovered
    assert len(incident.finding_ids) == 24
    assert incident.payment_ids == tuple(f"cs_{n}" for n in MANY)
    assert (incident.first_payment_at, incident.last_payment_at) == (at("12:41"), at("13:03"))
    assert (incident.opened_at, incident.last_seen) == (at("13:30"), at("13:55"))
    assert incident.cause.detail == REDIS_ERROR
    assert incident.cause.title(now=NOW) == "redis:channels down 12:41–13:05 UTC"


def test_the_endpoint_incident_names_where_stripe_delivers():
    findings = STORIES["an_outage_and_an_endpoint_problem_on_the_same_payments_list_each_customer_in_both"][0]
    _, endpoint = find_incidents(findings, [REDIS_DOWN], now=NOW)
    assert STAGING in endpoint.cause.detail
    assert endpoint.cause.start == at(
        "10:00"
    )  # its earliest finding: the problem is older than the monitor's look
    assert endpoint.recoverable == 2 and endpoint.amount_at_risk == {"usd": 2 * 14900}


@pytest.mark.parametrize(
    "findings, expected",
    [
        pytest.param(
            [unpaid("dana", "12:50"), inactive("dana", "12:50")], {"usd": 14900}, id="two_kinds_one_payment"
        ),
        pytest.param(
            [
                unpaid("dana", "12:50"),
                webhook("dana", "webhook_failed", "12:50"),
                webhook("dana", "webhook_missing", "12:50"),
            ],
            {"usd": 14900},
            id="webhook_findings_add_nothing",
        ),
        pytest.param(
            [unpaid("dana", "12:50"), unpaid("erin", "12:51", amount=9900, currency="eur")],
            {"usd": 14900, "eur": 9900},
            id="per_currency",
        ),
        pytest.param(
            [unpaid("dana", "12:50"), seen(finding("erin", "amount_mismatch", occurred_at=at("12:50")))],
            {"usd": 14900},
            id="only_money_at_risk",
        ),
        pytest.param(
            [seen(finding("dana", "webhook_failed", occurred_at=at("12:50")))], {}, id="nothing_at_risk"
        ),
    ],
)
def test_amount_at_risk_counts_each_payment_once_per_currency(findings, expected):
    (incident,) = find_incidents(findings, [REDIS_DOWN], now=NOW)
    assert incident.amount_at_risk == expected


def test_an_incident_keeps_its_id_while_its_findings_change():
    failures = redis_failures("dana", "erin", "fay")

    def ids(names: tuple[str, ...]) -> dict[str, str]:
        findings = [unpaid(n, "12:50") for n in names] + [
            webhook(n, "webhook_failed", "09:00") for n in names
        ]
        findings += [endpoint_problem(), webhook(names[0], "webhook_missing", "11:00")]
        return {
            i.cause.kind: i.id for i in find_incidents(findings, [REDIS_DOWN], now=NOW, failures=failures)
        }

    first, second = ids(("dana", "erin")), ids(("erin", "fay"))
    assert first == second
    assert set(first) == {OUTAGE, ENDPOINT, APP_ERROR}
    assert len(set(first.values())) == 3


def test_two_outages_of_one_component_are_two_incidents():
    later = Outage(REDIS, at("13:40"), at("13:45"), REDIS_ERROR, "down")
    incidents = find_incidents(
        [unpaid("dana", "12:50"), unpaid("erin", "13:42")], [REDIS_DOWN, later], now=NOW
    )
    assert [i.customer_keys for i in incidents] == [("cus_dana",), ("cus_erin",)]
    assert incidents[0].id != incidents[1].id


def test_the_no_known_cause_incident_keeps_one_id():
    one = find_incidents([unpaid("dana", "09:00")], [], now=NOW)
    other = find_incidents([inactive("erin", "10:00")], [], now=NOW)
    assert one[0].id == other[0].id == incident_id(UNKNOWN)


def test_ongoing_and_down_outages_come_first_then_endpoint_app_error_unknown():
    outages = [
        Outage("app_db", at("12:00"), at("13:00"), "timeout", "degraded"),
        Outage("stripe_api", at("12:00"), at("13:00"), "503", "down"),
        Outage(REDIS, at("12:30"), None, REDIS_ERROR, "down"),
    ]
    findings = [
        unpaid("dana", "12:45", first_seen="13:00"),
        endpoint_problem(first_seen="12:00"),
        webhook("erin", "webhook_failed", "09:00"),
        unpaid("fay", "08:00"),
    ]
    incidents = find_incidents(findings, outages, now=NOW, failures=redis_failures("erin"))
    assert [(i.cause.kind, i.cause.component) for i in incidents] == [
        (OUTAGE, REDIS),
        (OUTAGE, "stripe_api"),
        (OUTAGE, "app_db"),
        (ENDPOINT, "webhook_endpoint"),
        (APP_ERROR, None),
        (UNKNOWN, None),
    ]


def test_a_customer_known_only_by_email_on_one_finding_is_counted_once():
    by_email = seen(finding("dana", "webhook_failed", occurred_at=at("12:50")))  # the cast's: e-mail only
    (incident,) = find_incidents([unpaid("dana", "12:50"), by_email], [REDIS_DOWN], now=NOW)
    assert incident.customer_keys == ("cus_dana",)


def test_the_json_is_designs_object():
    findings = STORIES["one_outage_across_many_customers"][0][:2]
    (incident,) = find_incidents(findings, [REDIS_DOWN], now=NOW)
    assert incident.to_json() == {
        "id": incident.id,
        "status": "open",
        "cause": {
            "kind": "outage",
            "component": REDIS,
            "detail": REDIS_ERROR,
            "from": "2026-11-26T12:41:00Z",
            "to": "2026-11-26T13:05:00Z",
        },
        "opened_at": "2026-11-26T13:30:00Z",
        "last_seen": "2026-11-26T13:55:00Z",
        "finding_ids": sorted(f.id for f in findings),
        "payment_ids": ["cs_c00", "cs_c01"],
        "customers": 2,
        "amount_at_risk": {"usd": 29800},
        "first_payment_at": "2026-11-26T12:41:00Z",
        "last_payment_at": "2026-11-26T12:43:00Z",
        "recoverable": 2,
    }


@pytest.mark.parametrize(
    "one, other",
    [
        (
            "Error 111 connecting to 10.0.0.7:6379. Connection refused.",
            "Error 111 connecting to 10.0.0.12:6379. Connection refused.",
        ),
        ("Subscription for cs_a1B2c3 not found", "Subscription for cs_zZ9 not found"),
        ("duplicate key: (email)=(dana@example.com)", "duplicate key: (email)=(erin@example.org)"),
        ("Timeout reading from socket after 5.0 s", "Timeout reading from socket after 12.5 s"),
        ("<Lock object at 0x7f3a9c2b1d00> expired", "<Lock object at 0x7f00aa11bb22> expired"),
        (
            'Traceback (most recent call last):\n  File "x.py", line 3\nredis.ConnectionError: Error 111',
            'Traceback (most recent call last):\n  File "y.py", line 9\nredis.ConnectionError: Error 113',
        ),
    ],
)
def test_one_error_from_many_events_has_one_signature(one, other):
    assert signature(one) == signature(other)


@pytest.mark.parametrize(
    "one, other",
    [
        (REDIS_ERROR, 'relation "accounts_subscription" does not exist'),
        (REDIS_ERROR, "Error 111 connecting to redis.internal:6379. Connection refused."),  # another server
    ],
)
def test_different_errors_have_different_signatures(one, other):
    assert signature(one) != signature(other)


def test_the_app_error_detail_is_the_earliest_failure_word_for_word():
    failures = {
        "evt_dana": "Error 111 connecting to 10.0.0.12:6379. Connection refused.",
        "evt_erin": "Error 111 connecting to 10.0.0.7:6379. Connection refused.",
    }
    findings = [webhook("dana", "webhook_failed", "10:00"), webhook("erin", "webhook_failed", "09:00")]
    (incident,) = find_incidents(findings, [], now=NOW, failures=failures)
    assert incident.cause.detail == "Error 111 connecting to 10.0.0.7:6379. Connection refused."
    assert (incident.cause.start, incident.cause.end) == (at("09:00"), at("10:00"))


def test_log_failures_are_the_events_whose_latest_row_failed():
    rows = [
        ("evt_dana", "failed", REDIS_ERROR, "12:50"),
        ("evt_erin", "failed", REDIS_ERROR, "12:51"),
        ("evt_erin", "processed", None, "13:10"),  # retried and processed: no failure
        ("evt_fay", "failed", None, "12:52"),
    ]
    log = pd.DataFrame(
        [
            {"event_id": e, "type": "checkout.session.completed", "received_at": at(t), "processed_at": None}
            | {"status": s, "error": err}
            for e, s, err, t in rows
        ],
        columns=list(LOG_COLUMNS),
    )
    assert log_failures(log, ok_statuses=("processed",)) == {
        "evt_dana": REDIS_ERROR,
        "evt_fay": "failed (no error text)",
    }
    assert log_failures(None, ok_statuses=("processed",)) == {}


def test_a_stored_finding_becomes_an_open_finding():
    stored = finding("dana", occurred_at=at("12:50")).to_dict() | {
        "id": "f1",
        "status": "open",
        "first_seen": "2026-11-26T13:30:00Z",
        "last_seen": "2026-11-26T13:55:00Z",
        "resolved_at": None,
        "occurred_at": "2026-11-26T12:50:00Z",
    }
    del stored["key"]
    f = open_finding(stored)
    assert (f.id, f.first_seen, f.seen, f.time) == ("f1", at("13:30"), at("13:55"), at("12:50"))
    assert (f.finding.kind, f.finding.payment_id, f.finding.customer_id) == (
        "paid_without_subscription",
        "cs_dana",
        "cus_dana",
    )
    (incident,) = find_incidents([f], [REDIS_DOWN], now=NOW)
    assert incident.cause.kind == OUTAGE and incident.recoverable_ids == ("f1",)


def test_a_finding_the_store_returns_is_taken_as_it_is():
    from monitor.store.lifecycle import StoredFinding

    f = finding("dana", occurred_at=at("12:50"))
    stored = StoredFinding(**vars(f), first_seen=at("13:30"), last_seen=at("13:55"))
    got = open_finding(stored)
    assert (got.id, got.first_seen, got.seen, got.time) == (f.id, at("13:30"), at("13:55"), at("12:50"))
    assert got.finding is stored


# --- the Overview's status line, as a table -----------------------------------------------------------------


def component(name: str, status: str) -> dict:
    return {"name": name, "status": status, "detail": ""}


UP = [component("redis:channels", "up"), component("webhook_endpoint", "up"), component("app_db", "up")]


@pytest.mark.parametrize(
    ("strip", "summary", "line"),
    [
        (
            [component("webhook_endpoint", "down"), component("redis:channels", "down")],
            FindingsSummary(by_kind={"endpoint_misconfigured": 1}),
            "CRITICAL — redis:channels down, webhook endpoint misconfigured",
        ),
        (
            [component("redis:channels", "degraded"), component("app_db", "down")],
            FindingsSummary(),
            "CRITICAL — app_db down, redis:channels degraded",
        ),
        (
            UP,
            FindingsSummary(by_kind={"endpoint_misconfigured": 1}),
            "CRITICAL — webhook endpoint misconfigured",
        ),
        (
            UP,
            FindingsSummary(
                by_kind={"paid_without_subscription": 2, "webhook_missing": 3},
                by_severity={"critical": 2, "warning": 3},
            ),
            "CRITICAL — 2 critical findings open, 3 warning findings open",
        ),
        (
            UP,
            FindingsSummary(by_kind={"webhook_missing": 1}, by_severity={"warning": 1}),
            "WARNING — 1 warning finding open",
        ),
        ([*UP, component("scheduler", "unknown")], FindingsSummary(), "WARNING — scheduler unknown"),
        (UP, FindingsSummary(), "OK — every component up, no open finding"),
    ],
    ids=[
        "down-and-endpoint",
        "down-before-degraded",
        "endpoint-only",
        "findings",
        "warning",
        "unknown",
        "ok",
    ],
)
def test_the_status_line_names_the_worst_first(strip, summary, line):
    assert status_line(strip, summary) == StatusLine(line.partition(" — ")[0], line)


def test_a_degraded_endpoint_is_named_as_the_endpoint_problem_not_as_a_component():
    strip = [component("webhook_endpoint", "degraded"), component("app_db", "up")]
    assert status_line(strip, FindingsSummary()).text == "WARNING — webhook endpoint misconfigured"


def test_the_status_line_says_when_no_probe_has_run_yet():
    assert status_line([], FindingsSummary()) == StatusLine("OK", "OK — no probe has run yet")
    warning = FindingsSummary(by_kind={"webhook_missing": 1}, by_severity={"warning": 1})
    assert status_line([], warning).text == "WARNING — 1 warning finding open, no probe has run yet"


def test_a_component_without_a_status_is_named_unknown():
    strip = [*UP, {"name": "scheduler", "status": None}]
    assert status_line(strip, FindingsSummary()) == StatusLine("WARNING", "WARNING — scheduler unknown")
