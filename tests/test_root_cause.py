"""Outage windows from the probe history, and the "Why:" part root cause adds to payment findings."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pandas as pd
import pytest

from monitor.rules.findings import Finding
from monitor.rules.outages import Outage, format_window, outage_windows
from monitor.rules.root_cause import explain
from monitor.rules.webhook_health import EVENT_COLUMNS, LOG_COLUMNS
from tests.stripe_cast import REDIS_ERROR
from tests.table_cast import checkout, finding, payments_frame

NOW = datetime(2026, 11, 26, 13, 5, tzinfo=UTC)
PAID_AT = datetime(2026, 11, 26, 11, 1, tzinfo=UTC)


def at(hhmm: str, day: int = 26) -> datetime:
    hour, minute = map(int, hhmm.split(":"))
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


# --- outage windows ---------------------------------------------------------------------------------------


def probes(*results: tuple[str, str, str, str]) -> pd.DataFrame:
    """(component, status, detail, "HH:MM") per probe result."""
    return pd.DataFrame(
        [
            {"component": c, "status": s, "detail": d, "latency_ms": None, "checked_at": at(t)}
            for c, s, d, t in results
        ],
        columns=["component", "status", "detail", "latency_ms", "checked_at"],
    )


REDIS = "redis:channels"
OUTAGES = {
    "up_down_up_is_one_closed_window_with_the_first_error": (
        probes(
            (REDIS, "up", "PONG", "10:57"),
            (REDIS, "down", REDIS_ERROR, "10:58"),
            (REDIS, "down", "Error 111 again", "11:10"),
            (REDIS, "up", "PONG", "11:20"),
            (REDIS, "up", "PONG", "11:30"),
        ),
        [Outage(REDIS, at("10:58"), at("11:20"), REDIS_ERROR, "down")],
    ),
    "down_without_a_later_up_is_ongoing": (
        probes((REDIS, "up", "", "10:57"), (REDIS, "down", REDIS_ERROR, "10:58")),
        [Outage(REDIS, at("10:58"), None, REDIS_ERROR, "down")],
    ),
    "degraded_run_is_degraded": (
        probes((REDIS, "degraded", "slow: 900 ms", "10:00"), (REDIS, "up", "", "10:05")),
        [Outage(REDIS, at("10:00"), at("10:05"), "slow: 900 ms", "degraded")],
    ),
    "a_run_with_any_down_is_down": (
        probes(
            (REDIS, "degraded", "slow", "10:00"),
            (REDIS, "down", "refused", "10:01"),
            (REDIS, "up", "", "10:05"),
        ),
        [Outage(REDIS, at("10:00"), at("10:05"), "slow", "down")],
    ),
    "unknown_neither_opens_nor_closes": (
        probes(
            (REDIS, "unknown", "probe timed out", "09:00"),
            (REDIS, "down", "refused", "10:00"),
            (REDIS, "unknown", "", "10:02"),
            (REDIS, "up", "", "10:05"),
        ),
        [Outage(REDIS, at("10:00"), at("10:05"), "refused", "down")],
    ),
    "two_components_are_independent": (
        probes(
            (REDIS, "down", "refused", "10:00"),
            ("app_db", "down", "connection refused", "10:02"),
            (REDIS, "up", "", "10:05"),
            ("app_db", "up", "", "10:30"),
        ),
        [
            Outage(REDIS, at("10:00"), at("10:05"), "refused", "down"),
            Outage("app_db", at("10:02"), at("10:30"), "connection refused", "down"),
        ],
    ),
    "two_outages_of_one_component": (
        probes(
            (REDIS, "down", "first", "10:00"),
            (REDIS, "up", "", "10:05"),
            (REDIS, "down", "second", "11:00"),
        ),
        [
            Outage(REDIS, at("10:00"), at("10:05"), "first", "down"),
            Outage(REDIS, at("11:00"), None, "second", "down"),
        ],
    ),
    "results_out_of_order_are_read_by_time": (
        probes((REDIS, "up", "", "10:05"), (REDIS, "down", "refused", "10:00")),
        [Outage(REDIS, at("10:00"), at("10:05"), "refused", "down")],
    ),
    "always_up_is_nothing": (probes((REDIS, "up", "", "10:00"), (REDIS, "up", "", "10:05")), []),
    "empty_history_is_nothing": (probes(), []),
}


@pytest.mark.parametrize(("history", "expected"), OUTAGES.values(), ids=OUTAGES.keys())
def test_outage_windows(history, expected):
    assert outage_windows(history) == expected


@pytest.mark.parametrize(
    ("start", "end", "text"),
    [
        (at("10:58"), at("11:20"), "10:58–11:20 UTC"),
        (at("10:58", 24), at("11:20", 24), "2026-11-24 10:58–11:20 UTC"),
        (at("23:50", 25), at("00:10", 26), "2026-11-25 23:50–2026-11-26 00:10 UTC"),
        (at("10:58"), None, "since 10:58 UTC"),
        (at("23:50", 25), None, "since 2026-11-25 23:50 UTC"),
    ],
    ids=["same_day", "same_day_not_today", "across_days", "ongoing_today", "ongoing_since_yesterday"],
)
def test_format_window(start, end, text):
    assert format_window(Outage(REDIS, start, end, "", "down"), now=NOW) == text


# --- root cause -------------------------------------------------------------------------------------------


def payments(**fields) -> pd.DataFrame:
    """Dana's USD 149 Checkout payment."""
    return payments_frame([checkout("dana", created=PAID_AT, **fields)])


def events(**fields) -> pd.DataFrame:
    row = {
        "id": "evt_dana",
        "type": "checkout.session.completed",
        "created": datetime(2026, 11, 26, 11, 1, 40, tzinfo=UTC),
        "pending_webhooks": 1,
        "object_id": "cs_dana",
        "object_type": "checkout.session",
        "livemode": False,
    }
    return pd.DataFrame([row | fields], columns=list(EVENT_COLUMNS))


def app_log(*rows: dict) -> pd.DataFrame:
    base = {"event_id": "evt_dana", "type": "checkout.session.completed", "received_at": at("11:02")}
    return pd.DataFrame([base | r for r in rows], columns=list(LOG_COLUMNS))


FAILED = {"status": "failed", "error": REDIS_ERROR, "processed_at": pd.NaT}
REDIS_DOWN = Outage(REDIS, at("10:58"), at("11:20"), REDIS_ERROR, "down")


def dana(kind: str = "paid_without_subscription", **fields) -> Finding:
    """The finding about Dana's USD 149 payment as reconcile reports it, before root cause names its event."""
    before = {
        "hint": "paid USD 149.00 on 2026-11-26 11:01 UTC (cs_dana)",
        "occurred_at": PAID_AT,
        "event_id": None,
    }
    return finding("dana", kind, **(before | fields))


def why(found: list[Finding]) -> str:
    (f,) = found
    return f.hint.split(" Why: ")[1]


def test_the_incident_names_the_pending_event_the_apps_error_and_the_redis_outage():
    (f,) = explain([dana()], payments(), events(), app_log(FAILED), [REDIS_DOWN], now=NOW)
    assert f.hint == (
        "paid USD 149.00 on 2026-11-26 11:01 UTC (cs_dana). Why: checkout.session.completed evt_dana pending at "
        f"1 endpoint for 2 h 3 min; app log: failed “{REDIS_ERROR}”; redis:channels down 10:58–11:20 UTC"
    )
    assert f.event_id == "evt_dana"


@pytest.mark.parametrize(
    ("outage", "named"),
    [
        (Outage(REDIS, at("10:58"), at("11:20"), "", "down"), True),
        (Outage(REDIS, at("10:40"), at("10:52"), "", "down"), True),
        (Outage(REDIS, at("11:30"), None, "", "down"), True),
        (Outage(REDIS, at("10:00"), at("10:50"), "", "down"), False),
        (Outage(REDIS, at("11:32"), at("12:00"), "", "down"), False),
        (Outage(REDIS, at("09:00", 25), at("09:30", 25), "", "down"), False),
    ],
    ids=[
        "covers_the_payment",
        "ended_within_10_min_before",
        "started_within_30_min_after",
        "ended_earlier",
        "started_later",
        "a_day_earlier",
    ],
)
def test_only_outages_overlapping_the_payments_window_are_named(outage, named):
    text = why(explain([dana()], payments(), events(), app_log(FAILED), [outage], now=NOW))
    assert (REDIS in text) == named


@pytest.mark.parametrize(
    ("pays", "evts", "log", "expected"),
    [
        (
            payments(),
            events(pending_webhooks=0),
            app_log({"status": "processed"}),
            "checkout.session.completed evt_dana delivered; app log: processed",
        ),
        (
            payments(),
            events(),
            app_log({"event_id": "evt_someone_else", "status": "failed", "error": "boom"}),
            "checkout.session.completed evt_dana pending at 1 endpoint for 2 h 3 min; app log: no record",
        ),
        (
            payments(),
            events(),
            None,
            "checkout.session.completed evt_dana pending at 1 endpoint for 2 h 3 min",
        ),
        (
            payments(event_id=None),
            events(),
            None,
            "checkout.session.completed evt_dana pending at 1 endpoint for 2 h 3 min",
        ),
        (payments(event_id=None), events(object_id="cs_other"), app_log(FAILED), "no event found"),
        (
            payments(),
            events(id="evt_other"),
            app_log(FAILED),
            f"event evt_dana is not among Stripe's listed events; app log: failed “{REDIS_ERROR}”",
        ),
        (
            payments(),
            events(),
            app_log({"status": "failed", "error": None}),
            "checkout.session.completed evt_dana pending at 1 endpoint for 2 h 3 min; app log: failed (no error text)",
        ),
    ],
    ids=[
        "delivered_and_processed",
        "no_log_row",
        "app_keeps_no_log",
        "event_found_by_its_object",
        "no_event",
        "event_not_listed",
        "failure_without_text",
    ],
)
def test_why_tells_the_events_delivery_and_the_apps_log(pays, evts, log, expected):
    assert why(explain([dana()], pays, evts, log, [], now=NOW)) == expected


def test_the_findings_event_id_is_used_and_a_missing_one_is_filled():
    (f,) = explain([dana(event_id="evt_dana")], payments(event_id=None), events(), None, [], now=NOW)
    assert f.event_id == "evt_dana" and "evt_dana pending" in f.hint
    (g,) = explain([dana()], payments(event_id=None), events(), None, [], now=NOW)
    assert g.event_id == "evt_dana"


@pytest.mark.parametrize("kind", ["subscription_not_active", "period_not_extended"])
def test_every_payment_kind_is_explained(kind):
    assert " Why: " in explain([dana(kind)], payments(), events(), None, [], now=NOW)[0].hint


@pytest.mark.parametrize(
    "kind",
    [
        "amount_mismatch",
        "duplicate_subscription",
        "refunded_but_active",
        "webhook_failed",
        "endpoint_misconfigured",
    ],
)
def test_other_kinds_are_untouched(kind):
    f = dana(kind, payment_id="cs_dana")  # about Dana's payment too, whatever the kind
    assert explain([f], payments(), events(), app_log(FAILED), [REDIS_DOWN], now=NOW) == [f]


def test_explaining_twice_gives_the_same_hint_and_leaves_the_inputs_alone():
    f, pays, evts, log = dana(), payments(), events(), app_log(FAILED)
    kept = (copy.deepcopy(f), pays.copy(), evts.copy(), log.copy())
    once = explain([f], pays, evts, log, [REDIS_DOWN], now=NOW)
    assert explain(once, pays, evts, log, [REDIS_DOWN], now=NOW) == once
    assert f == kept[0]
    pd.testing.assert_frame_equal(pays, kept[1])
    pd.testing.assert_frame_equal(evts, kept[2])
    pd.testing.assert_frame_equal(log, kept[3])
