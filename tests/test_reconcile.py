"""reconcile(): Stripe payments against the app's subscription rows, on small hand-written tables.

A named cast of customers, each a story with the findings it must produce and no others; then the edges of
each rule one at a time, the summary, and a larger generated table for counts.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from monitor.rules.findings import PAYMENT_KINDS
from monitor.rules.money import format_money
from monitor.rules.reconcile import (
    PAYMENT_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    empty_payments,
    empty_subscriptions,
    reconcile,
)
from tests.table_cast import DAY, MONTH, NOW, checkout, invoices, row, tables

GRACE = timedelta(minutes=10)


# --- judging tables of the cast (tests/table_cast.py) -----------------------------------------------------


def run(payments: list[dict], rows: list[dict], **options):
    pay, subs = tables(payments, rows)
    return reconcile(pay, subs, now=NOW, grace=GRACE, **options)


def keys(result) -> set[str]:
    return {f.key for f in result.findings}


def only(result, kind: str):
    found = [f for f in result.findings if f.kind == kind]
    assert len(found) == 1, [f.key for f in result.findings]
    return found[0]


# --- the cast: each customer's story and exactly the findings it produces --------------------------------

CAST = {
    "paid_and_active": ([checkout("alice")], [row(1, "alice")], set()),
    "paid_never_activated": ([checkout("bob")], [], {"paid_without_subscription:cs_bob"}),
    "pending_row": (
        [checkout("carol")],
        [row(3, "carol", status="pending", activated_at=pd.NaT)],
        {"subscription_not_active:cs_carol"},
    ),
    "refunded_still_active": (
        [checkout("dave", amount_refunded=14900)],
        [row(4, "dave")],
        {"refunded_but_active:cs_dave"},
    ),
    "partly_refunded": ([checkout("erin", amount_refunded=4900)], [row(5, "erin")], set()),
    "dispute_lost": (
        [checkout("fred", dispute_status="lost")],
        [row(6, "fred")],
        {"refunded_but_active:cs_fred"},
    ),
    "dispute_open": ([checkout("gina", dispute_status="needs_response")], [row(7, "gina")], set()),
    "cheaper_row": ([checkout("hank")], [row(8, "hank", amount=9900)], {"amount_mismatch:cs_hank"}),
    "row_in_other_currency": (
        [checkout("iris")],
        [row(9, "iris", currency="eur")],
        {"amount_mismatch:cs_iris"},
    ),
    "currency_in_capitals": ([checkout("jack")], [row(10, "jack", currency="USD")], set()),
    "duplicated_by_fallback": (
        [checkout("kate")],
        [row(11, "kate"), row(12, "kate", by="intent", payment_intent_id="pi_kate")],
        {"duplicate_subscription:cs_kate"},
    ),
    "second_row_canceled": (
        [checkout("liam")],
        [row(13, "liam"), row(14, "liam", status="canceled")],
        set(),
    ),
    "orphan_row": ([], [row(15, "mona", by="nothing")], {"active_without_payment:row:15"}),
    "weak_match_by_email": (
        [checkout("nick")],
        [row(16, "nick", by="nothing", email="Nick@Example.COM", customer_id=None, status="pending")],
        {"paid_without_subscription:cs_nick"},
    ),
    "weak_active_row_by_customer": (
        [checkout("olga")],
        [row(17, "olga", by="nothing", email="olga.other@example.com")],
        {"paid_without_subscription:cs_olga"},
    ),
    "within_grace": ([checkout("pete", created=NOW - timedelta(minutes=2))], [], set()),
    "trial_row": ([], [row(19, "quin", by="nothing", status="trialing")], set()),
    "activated_by_intent": ([checkout("rosa")], [row(20, "rosa", by="intent")], set()),
    "refunded_and_canceled": (
        [checkout("sam", amount_refunded=14900)],
        [row(21, "sam", status="canceled")],
        set(),
    ),
    "paid_period_over": (
        [checkout("tina", created=NOW - 400 * DAY)],
        [row(22, "tina", status="expired", current_period_end=NOW - 35 * DAY)],
        set(),
    ),
    "canceled_at_stripe": (
        [checkout("ugo", stripe_subscription_id="sub_ugo", stripe_subscription_status="canceled")],
        [row(23, "ugo", status="canceled")],
        set(),
    ),
    "renewal_extended": (
        invoices("vera", 3),
        [row(24, "vera", by="subscription", amount=2900, current_period_end=NOW + MONTH - DAY)],
        set(),
    ),
    "renewal_not_extended": (
        invoices("walt", 3),
        [row(25, "walt", by="subscription", amount=2900, current_period_end=NOW - DAY)],
        {"period_not_extended:in_walt_3"},
    ),
    "renewals_of_a_canceled_row": (
        invoices("xena", 3),
        [row(26, "xena", by="subscription", amount=2900, status="canceled", current_period_end=pd.NaT)],
        {"subscription_not_active:in_xena_3"},
    ),
    "duplicated_by_subscription": (
        invoices("yuri", 2),
        [row(27, "yuri", by="subscription", amount=2900), row(28, "yuri", by="subscription", amount=2900)],
        {"duplicate_subscription:sub:sub_yuri"},
    ),
}


def whole_cast() -> tuple[list[dict], list[dict]]:
    """Every customer of the cast in one pair of tables."""
    return [p for ps, _, _ in CAST.values() for p in ps], [r for _, rs, _ in CAST.values() for r in rs]


@pytest.mark.parametrize("story", CAST.values(), ids=CAST.keys())
def test_each_customer_gets_exactly_their_findings(story):
    payments, rows, expected = story
    assert keys(run(payments, rows)) == expected


def test_the_whole_cast_together_gets_the_union_of_their_findings():
    payments, rows = whole_cast()
    expected = set().union(*(e for _, _, e in CAST.values()))
    assert keys(run(payments, rows)) == expected


# --- grace ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (GRACE, set()),
        (GRACE + timedelta(seconds=1), {"paid_without_subscription:cs_bob"}),
    ],
    ids=["exactly_at_grace", "one_second_over"],
)
def test_a_payment_is_due_only_when_strictly_older_than_grace(age, expected):
    assert keys(run([checkout("bob", created=NOW - age)], [])) == expected


@pytest.mark.parametrize(
    ("age", "expected"),
    [(GRACE, set()), (GRACE + timedelta(seconds=1), {"subscription_not_active:cs_carol"})],
    ids=["exactly_at_grace", "one_second_over"],
)
def test_an_inactive_row_is_reported_only_after_grace(age, expected):
    payments = [checkout("carol", created=NOW - age)]
    assert keys(run(payments, [row(3, "carol", status="pending")])) == expected


@pytest.mark.parametrize(
    ("age", "expected"),
    [(GRACE, set()), (GRACE + timedelta(seconds=1), {"active_without_payment:row:15"})],
    ids=["exactly_at_grace", "one_second_over"],
)
def test_a_row_without_payment_is_reported_only_after_grace(age, expected):
    assert keys(run([], [row(15, "mona", by="nothing", created_at=NOW - age)])) == expected


def test_value_checks_do_not_wait_for_grace():
    result = run([checkout("hank", created=NOW - timedelta(minutes=1))], [row(8, "hank", amount=9900)])
    assert keys(result) == {"amount_mismatch:cs_hank"}


# --- matching ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA, ""], ids=["None", "NaN", "NA", "empty"])
def test_missing_ids_never_match_each_other(missing):
    payments = [checkout("bob", checkout_session_id=missing, payment_intent_id=missing)]
    rows = [row(15, "mona", by="nothing", checkout_session_id=missing, payment_intent_id=missing)]
    assert keys(run(payments, rows)) == {"paid_without_subscription:cs_bob", "active_without_payment:row:15"}


def test_a_weak_match_is_named_in_the_hint_with_id_email_status_and_how_it_matches():
    nick = run(*CAST["weak_match_by_email"][:2]).findings[0]
    assert "row 16 (Nick@Example.COM, pending) matches only by e-mail" in nick.hint
    assert nick.subscription_ids == []
    olga = run(*CAST["weak_active_row_by_customer"][:2]).findings[0]
    assert "row 17 (olga.other@example.com, active) matches only by customer id" in olga.hint


def test_a_row_matching_by_customer_and_email_says_both():
    result = run([checkout("nick")], [row(16, "nick", by="nothing")])
    assert "matches only by customer id and e-mail" in only(result, "paid_without_subscription").hint


def test_a_weak_candidate_linked_to_another_payment_says_which():
    payments = [
        checkout("alice"),
        checkout("alice2", customer_id="cus_alice", customer_email="alice@example.com"),
    ]
    hint = only(run(payments, [row(1, "alice")]), "paid_without_subscription").hint
    assert (
        "row 1 (alice@example.com, active, belongs to cs_alice) matches only by customer id and e-mail"
        in hint
    )


def test_an_active_weak_candidate_is_not_also_reported_as_active_without_payment():
    result = run(*CAST["weak_active_row_by_customer"][:2])
    assert [f.kind for f in result.findings] == ["paid_without_subscription"]


def test_the_strongest_key_wins_when_a_row_matches_a_payment_by_several():
    payments = [checkout("rosa", stripe_subscription_id="sub_rosa")]
    rows = [row(20, "rosa", payment_intent_id="pi_rosa", stripe_subscription_id="sub_rosa")]
    result = run(payments, rows)
    assert keys(result) == set()
    assert result.summary["matched"] == 1


# --- subscription_not_active ------------------------------------------------------------------------------


def test_only_the_latest_renewal_of_a_canceled_row_is_judged():
    result = run(*CAST["renewals_of_a_canceled_row"][:2])
    f = only(result, "subscription_not_active")
    assert f.payment_id == "in_xena_3"
    assert f.subscription_ids == [26]
    assert result.summary["amount_at_risk"] == {"usd": 2900}


def test_a_not_active_hint_names_the_row_and_its_status():
    f = only(run(*CAST["pending_row"][:2]), "subscription_not_active")
    assert f.hint == (
        "paid USD 149.00 on 2026-11-25 11:20 UTC (cs_carol); row 3 (carol@example.com) links to it but is "
        "pending, not active"
    )


def test_a_subscriptions_checkout_payment_is_judged_even_after_renewals():
    # Matched by its session id, not only by the subscription id: judged like any one-time payment.
    payments = [checkout("xena", stripe_subscription_id="sub_xena", stripe_subscription_status="active")]
    payments[0]["created"] = NOW - 3 * MONTH
    payments += invoices("xena", 2)
    rows = [row(26, "xena", stripe_subscription_id="sub_xena", status="canceled", current_period_end=pd.NaT)]
    assert keys(run(payments, rows)) == {
        "subscription_not_active:cs_xena",
        "subscription_not_active:in_xena_2",
    }


def test_an_expired_row_whose_paid_period_is_over_is_right():
    payments = [checkout("tina")]
    assert keys(run(payments, [row(22, "tina", status="expired", current_period_end=NOW - DAY)])) == set()
    # ...but a row that ended while its period still runs is not.
    result = run(payments, [row(22, "tina", status="expired", current_period_end=NOW + DAY)])
    assert keys(result) == {"subscription_not_active:cs_tina"}


@pytest.mark.parametrize("stripe_status", ["canceled", "incomplete_expired"])
def test_an_ended_stripe_subscription_needs_no_active_row(stripe_status):
    payments = invoices("xena", 1, stripe_subscription_status=stripe_status)
    rows = [row(26, "xena", by="subscription", status="canceled", current_period_end=pd.NaT)]
    assert keys(run(payments, rows)) == set()


def test_a_settled_payment_needs_no_active_row():
    assert keys(run([checkout("sam", dispute_status="lost")], [row(21, "sam", status="canceled")])) == set()


# --- amount_mismatch and refunded_but_active -------------------------------------------------------------


def test_an_amount_mismatch_hint_shows_both_amounts():
    f = only(run([checkout("hank")], [row(7, "hank", amount=9900)]), "amount_mismatch")
    assert f.hint.startswith(
        "row 7 says USD 99.00, Stripe was paid USD 149.00 (cs_hank on 2026-11-25 11:20 UTC)"
    )
    assert f.subscription_ids == [7]


@pytest.mark.parametrize(
    ("row_fields", "expected"),
    [
        ({"amount": None}, set()),
        ({"currency": None}, set()),
        ({"currency": "Usd"}, set()),
        ({"amount": 14900, "currency": "EUR"}, {"amount_mismatch:cs_hank"}),
    ],
    ids=["row_amount_missing", "row_currency_missing", "currency_mixed_case", "currency_differs"],
)
def test_amounts_and_currencies_compare_only_what_the_row_knows(row_fields, expected):
    assert keys(run([checkout("hank")], [row(8, "hank", **row_fields)])) == expected


def test_an_active_row_is_judged_against_its_latest_payment_only():
    # The first invoice was refunded and cost more; the latest is paid in full at the row's price.
    payments = invoices("vera", 2)
    payments[0].update(amount=4900, amount_refunded=4900)
    rows = [row(24, "vera", by="subscription", amount=2900, current_period_end=NOW + MONTH)]
    assert keys(run(payments, rows)) == set()
    # The latest refunded: the row should not be active any more.
    payments[1].update(amount_refunded=2900)
    assert keys(run(payments, rows)) == {"refunded_but_active:in_vera_2"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"amount": 0}, set()),
        ({"billing_reason": "subscription_update", "amount": 1234}, set()),
        ({"amount": 1234}, {"amount_mismatch:in_vera_1"}),
    ],
    ids=["zero_amount_trial_invoice", "proration_invoice", "plain_invoice"],
)
def test_zero_and_proration_invoices_say_nothing_about_the_price(fields, expected):
    payments = invoices("vera", 1, **fields)
    rows = [row(24, "vera", by="subscription", amount=2900, current_period_end=NOW + MONTH)]
    assert keys(run(payments, rows)) == expected


def test_a_zero_amount_payment_is_not_fully_refunded():
    payments = invoices("vera", 1, amount=0)
    rows = [row(24, "vera", by="subscription", amount=2900, current_period_end=NOW + MONTH)]
    result = run(payments, rows)
    assert keys(result) == set()
    assert result.summary["matched"] == 1


def test_refunded_hints_say_why():
    dave = only(run(*CAST["refunded_still_active"][:2]), "refunded_but_active")
    assert dave.hint == (
        "paid USD 149.00 on 2026-11-25 11:20 UTC (cs_dave), refunded in full (USD 149.00), "
        "yet row 4 is still active"
    )
    fred = only(run(*CAST["dispute_lost"][:2]), "refunded_but_active")
    assert "(cs_fred), dispute lost, yet row 6 is still active" in fred.hint


def test_one_value_finding_per_payment_lists_every_row_concerned():
    rows = [row(12, "hank", amount=9900), row(11, "hank", by="intent", amount=9900)]
    f = only(run([checkout("hank")], rows), "amount_mismatch")
    assert f.subscription_ids == [11, 12]


# --- period_not_extended ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row_end", "expected"),
    [
        (NOW + MONTH - DAY, set()),  # exactly the invoice's period end
        (NOW + MONTH - DAY - timedelta(hours=23), set()),  # within a day's tolerance
        (NOW + MONTH - DAY - timedelta(hours=25), {"period_not_extended:in_walt_3"}),
        (pd.NaT, {"period_not_extended:in_walt_3"}),
        (datetime(9999, 12, 31, tzinfo=UTC), set()),
    ],
    ids=["extended", "a_little_earlier", "more_than_a_day_earlier", "no_period_end", "forever"],
)
def test_a_renewal_must_extend_the_rows_period(row_end, expected):
    rows = [row(25, "walt", by="subscription", amount=2900, current_period_end=row_end)]
    assert keys(run(invoices("walt", 3), rows)) == expected


def test_old_invoices_are_not_judged_for_the_period():
    # The row reflects the latest period; the first two invoices' periods are long past and must not count.
    rows = [row(25, "walt", by="subscription", amount=2900, current_period_end=NOW + MONTH)]
    assert keys(run(invoices("walt", 3), rows)) == set()


def test_a_renewal_within_grace_is_not_yet_judged_and_hides_the_older_one():
    payments = invoices("walt", 2)
    payments[1]["created"] = NOW - timedelta(minutes=1)
    rows = [row(25, "walt", by="subscription", amount=2900, current_period_end=NOW - DAY)]
    assert keys(run(payments, rows)) == set()


def test_a_period_hint_shows_both_ends():
    f = only(run(*CAST["renewal_not_extended"][:2]), "period_not_extended")
    assert f.hint == (
        "invoice in_walt_3 paid USD 29.00 on 2026-11-25 11:20 UTC for the period to 2026-12-25 11:20 UTC, "
        "but row 25 ends 2026-11-25 11:20 UTC"
    )


# --- duplicate_subscription -------------------------------------------------------------------------------


def test_a_duplicate_lists_both_rows():
    f = only(run(*CAST["duplicated_by_fallback"][:2]), "duplicate_subscription")
    assert (f.payment_id, f.subscription_ids) == ("cs_kate", [11, 12])
    assert f.hint.startswith("rows 11 and 12 are both active for one payment: paid USD 149.00")


def test_a_subscription_duplicate_names_the_first_payment():
    f = only(run(*CAST["duplicated_by_subscription"][:2]), "duplicate_subscription")
    assert (f.key, f.payment_id, f.subscription_ids) == (
        "duplicate_subscription:sub:sub_yuri",
        "in_yuri_1",
        [27, 28],
    )


def test_rows_duplicated_by_payment_and_subscription_are_reported_once():
    payments = [checkout("kate", stripe_subscription_id="sub_kate", stripe_subscription_status="active")]
    rows = [
        row(11, "kate", stripe_subscription_id="sub_kate"),
        row(12, "kate", stripe_subscription_id="sub_kate"),
    ]
    assert keys(run(payments, rows)) == {"duplicate_subscription:cs_kate"}


def test_rows_duplicated_by_subscription_without_any_payment_are_still_duplicates():
    rows = [row(27, "yuri", by="subscription"), row(28, "yuri", by="subscription", created_at=NOW - GRACE)]
    result = run([], rows)
    assert keys(result) == {"duplicate_subscription:sub:sub_yuri", "active_without_payment:row:27"}
    f = only(result, "duplicate_subscription")
    assert (f.payment_id, f.occurred_at, f.customer_email) == (None, NOW - GRACE, "yuri@example.com")


def test_three_active_rows_are_all_duplicates():
    rows = [row(i, "kate") for i in (11, 12, 13)]
    f = only(run([checkout("kate")], rows), "duplicate_subscription")
    assert f.hint.startswith("rows 11, 12 and 13 are all active for one payment")


# --- active_without_payment -------------------------------------------------------------------------------


def test_a_row_on_a_trialing_stripe_subscription_is_not_without_payment():
    trial = invoices("quin", 1, amount=0, stripe_subscription_status="trialing")
    rows = [row(19, "quin", by="subscription", status="active", amount=2900, current_period_end=NOW + MONTH)]
    assert keys(run(trial, rows)) == set()


def test_an_orphan_row_finding_carries_the_rows_values():
    f = only(run(*CAST["orphan_row"][:2]), "active_without_payment")
    assert (f.payment_id, f.subscription_ids, f.customer_email, f.amount, f.currency) == (
        None,
        [15],
        "mona@example.com",
        14900,
        "usd",
    )
    assert f.occurred_at == NOW - DAY + timedelta(seconds=5)
    assert f.hint.startswith("row 15 (mona@example.com) is active since 2026-11-25 11:20 UTC, but no Stripe")


def test_a_row_without_creation_time_cannot_be_within_grace():
    assert keys(run([], [row(15, "mona", by="nothing", created_at=pd.NaT)])) == {
        "active_without_payment:row:15"
    }


@pytest.mark.parametrize(
    ("status", "active_statuses", "expected"),
    [
        ("ACTIVE", ("active",), {"active_without_payment:row:15"}),
        ("paid", ("active", "paid"), {"active_without_payment:row:15"}),
        ("active", ("paid",), set()),
    ],
    ids=["status_case_ignored", "custom_active_status", "active_is_not_active_here"],
)
def test_active_statuses_decide_what_is_active(status, active_statuses, expected):
    rows = [row(15, "mona", by="nothing", status=status)]
    assert keys(run([], rows, active_statuses=active_statuses)) == expected


# --- findings as data -------------------------------------------------------------------------------------


def test_a_payment_finding_carries_the_payments_fields():
    f = only(run(*CAST["paid_never_activated"][:2]), "paid_without_subscription")
    assert f.to_dict() | {"id": None} == {
        "kind": "paid_without_subscription",
        "key": "paid_without_subscription:cs_bob",
        "payment_id": "cs_bob",
        "payment_intent_id": "pi_bob",
        "customer_id": "cus_bob",
        "customer_email": "bob@example.com",
        "amount": 14900,
        "currency": "usd",
        "subscription_ids": [],
        "event_id": "evt_bob",
        "hint": "paid USD 149.00 on 2026-11-25 11:20 UTC (cs_bob); no subscription row links to it by "
        "checkout session, payment intent or subscription id",
        "occurred_at": NOW - DAY,
        "severity": "critical",
        "id": None,
    }


def test_a_payment_without_customer_details_takes_them_from_its_row():
    payments = [checkout("carol", customer_email=None, customer_id=np.nan)]
    f = only(run(payments, [row(3, "carol", status="pending")]), "subscription_not_active")
    assert (f.customer_email, f.customer_id) == ("carol@example.com", "cus_carol")


def test_a_payment_listed_twice_is_reported_once():
    result = run([checkout("bob"), checkout("bob")], [])
    assert [f.key for f in result.findings] == ["paid_without_subscription:cs_bob"]


def test_the_input_frames_are_left_as_they_were():
    payments, rows = tables(*whole_cast())
    before = payments.copy(), rows.copy()
    reconcile(payments, rows, now=NOW, grace=GRACE)
    pd.testing.assert_frame_equal(payments, before[0])
    pd.testing.assert_frame_equal(rows, before[1])


def test_every_value_is_plain_python_and_serialisable():
    payments, rows = whole_cast()
    result = run(payments, rows)
    plain = (str, int, bool, list, type(None), datetime)
    for f in result.findings:
        for name, value in f.to_dict().items():
            assert type(value) in plain, (f.key, name, type(value))
        assert all(type(i) is int for i in f.subscription_ids)
        assert type(f.occurred_at) is datetime and f.occurred_at.utcoffset() == timedelta(0)
    json.dumps([f.to_dict() for f in result.findings], default=datetime.isoformat)
    json.dumps(result.summary)


def test_row_ids_keep_their_own_type():
    result = run([], [row("a-15", "mona", by="nothing")])
    assert only(result, "active_without_payment").subscription_ids == ["a-15"]
    assert only(result, "active_without_payment").key == "active_without_payment:row:a-15"


def test_keys_are_stable_across_calls_and_input_order():
    payments, rows = whole_cast()
    first = run(payments, rows)
    shuffled_payments, shuffled_rows = payments[:], rows[:]
    random.Random(7).shuffle(shuffled_payments)
    random.Random(8).shuffle(shuffled_rows)
    again = run(shuffled_payments, shuffled_rows)
    assert [(f.key, f.id, f.subscription_ids, f.hint) for f in first.findings] == [
        (f.key, f.id, f.subscription_ids, f.hint) for f in again.findings
    ]


def test_findings_come_in_kind_order():
    payments, rows = whole_cast()
    kinds = [f.kind for f in run(payments, rows).findings]
    assert kinds == sorted(kinds, key=PAYMENT_KINDS.index)


def test_a_frame_without_a_column_is_refused_by_name():
    pay, subs = tables([checkout("alice")], [])
    with pytest.raises(ValueError, match="event_id"):
        reconcile(pay.drop(columns="event_id"), subs, now=NOW, grace=GRACE)


def test_empty_frames_have_exactly_the_columns():
    assert tuple(empty_payments().columns) == PAYMENT_COLUMNS
    assert tuple(empty_subscriptions().columns) == SUBSCRIPTION_COLUMNS


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (14900, "usd", "USD 149.00"),
        (5, "eur", "EUR 0.05"),
        (123456789, "eur", "EUR 1,234,567.89"),
        (5000, "jpy", "JPY 5,000"),
        (1500, "kwd", "KWD 1.500"),
        (-250, "usd", "USD -2.50"),
    ],
)
def test_money_reads_like_money(amount, currency, text):
    assert format_money(amount, currency) == text


# --- summary ----------------------------------------------------------------------------------------------


def test_nothing_to_compare_is_full_parity():
    result = run([], [])
    assert result.findings == []
    assert result.summary == {
        "payments": 0,
        "matched": 0,
        "parity_pct": 100.0,
        "open_by_kind": {},
        "amount_at_risk": {},
    }


def test_summary_counts_the_whole_cast():
    payments, rows = whole_cast()
    result = run(payments, rows)
    summary = result.summary
    # In parity, 18 of 30: unsettled with an active row (alice, erin, gina, hank, iris, jack, kate, liam, rosa,
    # vera x3, walt x3, yuri x2) and settled without one (sam). Not: bob, carol, dave, fred, nick, olga, pete,
    # tina, ugo (no active row, or settled with one) and xena x3.
    assert summary["payments"] == len(payments) == 30
    assert summary["matched"] == 18
    assert summary["parity_pct"] == 60.0
    unmatched = ["bob", "carol", "dave", "fred", "nick", "olga", "pete", "tina", "ugo"]
    assert result.unmatched == sorted([f"cs_{n}" for n in unmatched] + [f"in_xena_{i}" for i in (1, 2, 3)])
    assert summary["open_by_kind"] == {
        "paid_without_subscription": 3,
        "subscription_not_active": 2,
        "refunded_but_active": 2,
        "amount_mismatch": 2,
        "duplicate_subscription": 2,
        "active_without_payment": 1,
        "period_not_extended": 1,
    }
    # bob, nick, olga (3 x 14900) and carol (14900), xena's latest invoice (2900).
    assert summary["amount_at_risk"] == {"usd": 4 * 14900 + 2900}


def test_money_at_risk_is_summed_per_currency():
    payments = [checkout("bob"), checkout("bo", currency="jpy", amount=5000), checkout("b", amount=100)]
    assert run(payments, []).summary["amount_at_risk"] == {"usd": 15000, "jpy": 5000}


# --- size -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_hundred_thousand_payments_get_the_right_counts():
    n = 200_000
    i = pd.Series(np.arange(n))
    group = (i % 10).to_numpy()
    ids = i.astype(str)
    payments = pd.DataFrame(
        {
            "payment_id": "cs_" + ids,
            "source": "checkout_session",
            "checkout_session_id": "cs_" + ids,
            "payment_intent_id": "pi_" + ids,
            "invoice_id": None,
            "stripe_subscription_id": None,
            "stripe_subscription_status": None,
            "customer_id": "cus_" + ids,
            "customer_email": "c" + ids + "@example.com",
            "amount": 14900,
            "currency": "usd",
            "created": NOW - DAY - pd.to_timedelta(i, unit="s"),
            "amount_refunded": np.where(group == 9, 14900, 0),  # 9: refunded, row still active
            "dispute_status": None,
            "billing_reason": None,
            "period_end": pd.NaT,
            "event_id": "evt_" + ids,
            "livemode": False,
        }
    )
    linked = payments[group != 6]  # 6: paid, never activated
    linked_group = group[group != 6]
    orphans = n // 10
    rows = pd.DataFrame(
        {
            "id": np.arange(len(linked) + orphans),
            "email": pd.concat([linked["customer_email"], "orphan" + ids[:orphans] + "@example.com"]),
            "customer_id": pd.concat([linked["customer_id"], pd.Series([None] * orphans)]),
            "checkout_session_id": pd.concat([linked["checkout_session_id"], pd.Series([None] * orphans)]),
            "payment_intent_id": None,
            "stripe_subscription_id": None,
            "amount": np.concatenate([np.where(linked_group == 8, 9900, 14900), np.full(orphans, 14900)]),
            "currency": "usd",
            "status": np.concatenate(
                [np.where(linked_group == 7, "pending", "active"), ["active"] * orphans]
            ),
            "created_at": NOW - 2 * DAY,
            "activated_at": pd.NaT,
            "current_period_end": NOW + 300 * DAY,
        }
    ).reset_index(drop=True)
    result = reconcile(payments, rows, now=NOW, grace=GRACE)
    tenth = n // 10
    assert result.summary["open_by_kind"] == {
        "paid_without_subscription": tenth,
        "subscription_not_active": tenth,
        "amount_mismatch": tenth,
        "refunded_but_active": tenth,
        "active_without_payment": orphans,
    }
    assert result.summary["matched"] == 7 * tenth  # groups 0-5 and 8 (active, only the amount differs)
    assert result.summary["parity_pct"] == 70.0
    assert result.summary["amount_at_risk"] == {"usd": 2 * tenth * 14900}
    assert len({f.key for f in result.findings}) == len(result.findings)
