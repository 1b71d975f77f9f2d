"""The rule that names a payment whichever of its ids was given (issue 14, item 5): a repair claims, locks
and records that one id, so two ids of one payment can never be repaired side by side."""

from __future__ import annotations

import itertools

import pytest
from alembic import command
from sqlalchemy import inspect, text

from monitor import store
from monitor.stripe_api.payment_state import PaymentState, canonical_id


@pytest.mark.parametrize(
    "given, known, expected",
    [
        ("cs_1", [], "cs_1"),  # a session alone
        ("in_1", [], "in_1"),  # an invoice no session names
        ("pi_1", [], "pi_1"),  # a one-off PaymentIntent
        ("pi_1", ["cs_1"], "cs_1"),  # the intent of a session (live: the sessions that name it)
        ("cs_1", ["in_1", "pi_1"], "cs_1"),  # a session names its invoice and intent
        ("in_1", ["cs_1", "pi_1"], "cs_1"),  # an invoice a session names is the session's payment
        ("pi_1", ["in_1"], "in_1"),  # an intent of an invoice is the invoice's payment
        ("pi_2", ["in_1", "cs_1"], "cs_1"),  # an intent of the invoice of a session
        ("pi_1", ["pi_1", "cs_1"], "cs_1"),  # the store still has the intent as its own payment: Stripe wins
        ("in_2", ["in_2", "pi_3"], "in_2"),  # a renewal: its own payment, not its subscription's session
        ("pi_1", [None, ""], "pi_1"),  # missing siblings are no siblings
        ("pi_1", ["cs_2", "cs_1"], "cs_1"),  # two sessions (never seen): the same answer for every caller
        ("cs_1", ["cus_1", "sub_1", "ch_1"], "cs_1"),  # ids of other kinds never name a payment
    ],
)
def test_a_payment_is_named_by_its_session_else_its_invoice_else_its_intent(given, known, expected):
    assert canonical_id(given, known) == expected


def test_every_id_of_one_payment_names_it_the_same_way_in_any_order():
    ids = ["cs_9", "in_9", "pi_9", "pi_10"]
    for given in ids:
        for known in itertools.permutations([i for i in ids if i != given]):
            assert canonical_id(given, known) == "cs_9"


def test_a_live_state_lists_every_id_of_its_payment():
    state = PaymentState(
        payment_id="in_1",
        kind="invoice",
        paid=True,
        status="paid",
        amount=100,
        currency="usd",
        checkout_session_id="cs_1",
        invoice_id="in_1",
        payment_intent_id="pi_1",
        payment_intent_ids=["pi_1", "pi_2"],
    )
    assert state.ids() == ["in_1", "cs_1", "pi_1", "pi_2"]
    assert canonical_id("pi_2", state.ids()) == "cs_1"


def test_ledger_rows_written_before_0007_were_asked_by_the_id_they_name(sqlite_or_postgres_url):
    """A store at 0006 with a ledger row: at head its requested_id is the id it was recorded by (then always
    the id given), and a downgrade takes the column away again."""
    engine = store.make_engine(sqlite_or_postgres_url)
    cfg = store._alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0006")
            conn.execute(
                text(
                    "INSERT INTO repairs (payment_id, operator, strategy, dry_run, outcome, reason, "
                    "started_at, finished_at) VALUES ('pi_old', 'support@example.com', 'db', false, "
                    "'created', 'created an active row', '2026-01-01 00:00:00', '2026-01-01 00:00:01')"
                )
            )
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0007")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT payment_id, requested_id FROM repairs")).all()
        assert [tuple(r) for r in rows] == [("pi_old", "pi_old")]
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0006")
            assert "requested_id" not in {c["name"] for c in inspect(conn).get_columns("repairs")}
    finally:
        engine.dispose()
