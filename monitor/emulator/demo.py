"""The demo scenario: a month of a small SaaS's Stripe traffic around the incident of DESIGN.md.

`build_demo(anchor)` returns the Stripe objects the emulator serves, the app's `subscriptions` rows and
its webhook log, all derived from `anchor` (the scenario's "now") and a seed, so every process that
rebuilds it gets the same objects and ids. `ensure_demo_app_db(url)` writes the app side once and keeps
the anchor in the app database, which is how the CLI's commands agree on one scenario.

The story: ordinary one-time and subscription payments, each with the row the app made for it; about two
days before the anchor the webhook endpoint was moved from production to staging, so later events went
there (delivered, but absent from the app's log); two hours before the anchor a customer paid USD 149,
staging answered errors, and the app's manual fallback failed on Redis. Around that, one isolated
customer for every finding kind, listed in `Demo.cases`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.emulator.demo_names import (
    DEMO_EXPECTED_WEBHOOK_URL,
    DEMO_OLD_WEBHOOK_URL,
    DEMO_STAGING_WEBHOOK_URL,
    INCIDENT_EMAIL,
)
from monitor.emulator.demo_payments import (
    API_VERSION,
    DAY,
    ENABLED_EVENTS,
    EVENT_RETENTION,
    HOUR,
    Payment,
    add_months,
    sql_timestamp,
    whole_utc,
)
from monitor.emulator.demo_traffic import ONE_TIME_PLANS, SUBSCRIPTION_PLANS, TrafficBuilder
from monitor.emulator.shapes import example

# redis-py's message for a refused connection to its default address (DESIGN.md "Lessons from the field").
REDIS_ERROR = "Error 111 connecting to localhost:6379. Connection refused."
DEFAULT_SEED = 149
# Each case's customer, by case name; ordinary customers never take these addresses.
CASE_PEOPLE = {
    "incident": ("Dana Whitfield", INCIDENT_EMAIL),
    "weak_match": ("Priya Raman", "priya.raman@example.org"),
    "pending_row": ("Tomas Novak", "tomas.novak@example.net"),
    "renewal_not_extended": ("Lena Fischer", "lena.fischer@example.org"),
    "amount_mismatch": ("Marcus Bell", "marcus.bell@example.com"),
    "triple_fallback": ("Sofia Marin", "sofia.marin@example.com"),
    "orphan_row": ("Kevin Oduya", "kevin.oduya@example.net"),
    "refunded_active": ("Hannah Lindqvist", "hannah.lindqvist@example.org"),
    "dispute_lost": ("Omar Haddad", "omar.haddad@example.com"),
    "delivered_to_staging": ("Grace Okafor", "grace.okafor@example.com"),
    "partial_refund": ("Ivan Petrov", "ivan.petrov@example.net"),
    "open_dispute": ("Mei Tanaka", "mei.tanaka@example.org"),
    "within_grace": ("Lucas Moreau", "lucas.moreau@example.com"),
}
PRO_ANNUAL = ONE_TIME_PLANS[1][0]
STARTER_ANNUAL = ONE_TIME_PLANS[0][0]
TEAM_ANNUAL = ONE_TIME_PLANS[2][0]
PRO_MONTHLY = SUBSCRIPTION_PLANS[0][0]


@dataclass
class Demo:
    anchor: datetime  # the scenario's "now" (UTC, whole seconds)
    objects: list[dict]  # Stripe objects, oldest first
    rows: list[dict]  # the app's `subscriptions` rows (default schema), ids 1..n in order of creation
    webhook_log: list[dict]  # the app's `webhook_events` rows
    cases: dict[str, dict]  # case name -> the ids involved and the finding kinds it is meant to produce


def build_demo(anchor: datetime, seed: int = DEFAULT_SEED) -> Demo:
    """The demo scenario for `anchor`; the same anchor and seed always give identical output, ids too."""
    return _Scenario(whole_utc(anchor), seed).build()


class _Scenario(TrafficBuilder):
    """The month's traffic, then one isolated case for each finding kind, then the webhook endpoints."""

    def __init__(self, anchor: datetime, seed: int):
        super().__init__(anchor, seed, reserved={email for _, email in CASE_PEOPLE.values()})
        self.cases: dict[str, dict] = {}
        self._case_rows: dict[str, list[dict]] = {}

    def build(self) -> Demo:
        self.ordinary_traffic()
        self.build_cases()
        self._endpoints()
        self.objects.sort(key=lambda o: o["created"])
        self.rows.sort(key=lambda r: r["created_at"])
        for number, row in enumerate(self.rows, start=1):
            row["id"] = number
            for key in ("created_at", "activated_at", "current_period_end"):
                if row[key] is not None:
                    row[key] = sql_timestamp(row[key])
        self.log.sort(key=lambda r: (r["received_at"], r["stripe_event_id"]))
        for name, rows in self._case_rows.items():
            self.cases[name]["row_ids"] = [r["id"] for r in rows]
        self.cases["delivered_to_staging"]["all_missing_event_ids"] = [
            o["id"]
            for o in self.objects
            if o["object"] == "event"
            and o["type"] in ENABLED_EVENTS
            and o["pending_webhooks"] == 0
            and o["created"] >= self.moved_at
        ]
        return Demo(self.anchor, self.objects, self.rows, self.log, self.cases)

    def _endpoints(self) -> None:
        self.endpoints = [
            self._add(
                example(
                    "webhook_endpoint",
                    id=self._id("we_"),
                    url=DEMO_STAGING_WEBHOOK_URL,
                    status="enabled",
                    enabled_events=list(ENABLED_EVENTS),
                    description="app webhook (fulfilment)",
                    api_version=API_VERSION,
                    created=self.now - 240 * DAY,
                    livemode=False,
                    metadata={},
                )
            ),
            self._add(
                example(
                    "webhook_endpoint",
                    id=self._id("we_"),
                    url=DEMO_OLD_WEBHOOK_URL,
                    status="disabled",
                    enabled_events=["checkout.session.completed"],
                    description="old Heroku app",
                    api_version="2024-06-20",
                    created=self.now - 420 * DAY,
                    livemode=False,
                    metadata={},
                )
            ),
        ]
        self.cases["endpoint_at_staging"] = {
            "kinds": ["endpoint_misconfigured"],
            "email": None,
            "customer_id": None,
            "payment_id": None,
            "event_ids": [],
            "row_ids": [],
            "note": "the only enabled endpoint is at the staging URL; none at the production URL",
            "endpoint_ids": [e["id"] for e in self.endpoints],
            "expected_url": DEMO_EXPECTED_WEBHOOK_URL,
            "registered_url": DEMO_STAGING_WEBHOOK_URL,
            "moved_at": sql_timestamp(self.moved_at),
        }

    # the cases

    def _case(self, name: str, kinds: list[str], pay: Payment, rows: list[dict], note: str, **extra) -> None:
        self._case_rows[name] = rows
        self.cases[name] = {
            "kinds": kinds,
            "email": pay.email,
            "customer_id": pay.customer["id"],
            # The payment a finding is about: the renewal invoice when there is one, else the session.
            "payment_id": pay.renewals[-1]["id"] if pay.renewals else pay.session["id"],
            "checkout_session_id": pay.session["id"],
            "payment_intent_id": pay.payment_intent["id"],
            "charge_id": pay.charge["id"],
            "subscription_id": pay.subscription["id"] if pay.subscription else None,
            "invoice_id": pay.invoice["id"] if pay.invoice else None,
            "amount": pay.plan.amount,
            "currency": pay.plan.currency,
            # Only the events Stripe still lists (30 days).
            "event_ids": [e["id"] for e in pay.events if e["created"] >= self.now - EVENT_RETENTION],
            "row_ids": [],
            "note": note,
            **extra,
        }

    def _case_customer(self, case: str, at: int, currency: str = "usd") -> dict:
        name, email = CASE_PEOPLE[case]
        return self._customer(name, email, at, currency)

    def build_cases(self) -> None:
        now = self.now
        # THE incident: paid two hours ago; staging answers errors; the manual fallback died on Redis.
        customer = self._case_customer("incident", now - 2 * HOUR - 100)
        pay = self.one_time(customer, PRO_ANNUAL, now - 2 * HOUR - 150, pending=1, paid_at=now - 2 * HOUR)
        completed = pay.events[-1]
        self.log.append(
            {
                "stripe_event_id": completed["id"],
                "type": "checkout.session.completed",
                "received_at": sql_timestamp(pay.paid_at + 41),
                "processed_at": None,
                "status": "failed",
                "error": REDIS_ERROR,
            }
        )
        self._case(
            "incident",
            ["paid_without_subscription", "webhook_undelivered", "webhook_failed"],
            pay,
            [],
            "USD 149 paid two hours ago; checkout.session.completed still pending at the staging endpoint; "
            "the app's manual fallback logged the event as failed on Redis; no subscription row",
            failed_event_id=completed["id"],
        )

        # Paid; the app's only row is a pending sign-up row with the e-mail and no Stripe ids.
        customer = self._case_customer("weak_match", now - 4 * DAY - 3 * HOUR)
        pay = self.one_time(customer, STARTER_ANNUAL, now - 4 * DAY - 3 * HOUR + 20)
        row = self.row(
            pay,
            by_ids=False,
            status="pending",
            created_at=pay.session["created"] - 600,
            current_period_end=None,
        )
        self._case(
            "weak_match",
            ["paid_without_subscription"],
            pay,
            [row],
            "the only row matches by e-mail alone (no Stripe ids, pending): a weak match the hint names",
        )

        customer = self._case_customer("pending_row", now - 6 * DAY - 5 * HOUR)
        pay = self.one_time(customer, PRO_ANNUAL, now - 6 * DAY - 5 * HOUR + 30)
        row = self.row(pay, status="pending")
        self._case(
            "pending_row",
            ["subscription_not_active"],
            pay,
            [row],
            "row linked by checkout session id, left pending: the activation step never ran",
        )

        # A monthly subscription renewed after the move to staging: invoice.paid never reached the app.
        # The billing day is taken from a month that has it, so the renewal falls exactly 20 h ago.
        renewal = now - 20 * HOUR
        months = next(k for k in (1, 2, 3) if add_months(add_months(renewal, -k), k) == renewal)
        paid_at = add_months(renewal, -months)
        customer = self._case_customer("renewal_not_extended", paid_at - 100)
        pay = self.subscribe(customer, PRO_MONTHLY, paid_at - 120, renew_until=now, paid_at=paid_at)
        row = self.row(pay)
        self._case(
            "renewal_not_extended",
            ["period_not_extended", "webhook_missing"],
            pay,
            [row],
            "renewal invoice paid about 19 h ago, after the endpoint moved to staging; the row still ends "
            "at the old period end",
            renewal_invoice_id=pay.renewals[-1]["id"],
        )

        customer = self._case_customer("amount_mismatch", now - 14 * DAY - 2 * HOUR)
        pay = self.one_time(customer, PRO_ANNUAL, now - 14 * DAY - 2 * HOUR + 15)
        row = self.row(pay, amount=9900)
        self._case("amount_mismatch", ["amount_mismatch"], pay, [row], "paid 14900; the row says 9900")

        customer = self._case_customer("triple_fallback", now - 8 * DAY - 7 * HOUR)
        pay = self.one_time(customer, PRO_ANNUAL, now - 8 * DAY - 7 * HOUR + 25)
        first = self.row(pay, created_at=pay.paid_at + 4)
        second = self.row(pay, created_at=pay.paid_at + 6)
        self._case(
            "triple_fallback",
            ["duplicate_subscription"],
            pay,
            [first, second],
            "the webhook and the direct insert both created an active row for one checkout session",
        )

        # An active row behind which there is no payment: its checkout session id leads nowhere.
        customer = self._case_customer("orphan_row", now - 5 * DAY - 9 * HOUR)
        created = now - 5 * DAY - 9 * HOUR + 400
        orphan = {
            "id": None,
            "customer_email": customer["email"],
            "stripe_customer_id": customer["id"],
            "stripe_checkout_session_id": self._id("cs_test_"),
            "stripe_payment_intent_id": None,
            "stripe_subscription_id": None,
            "plan": PRO_ANNUAL.key,
            "amount": PRO_ANNUAL.amount,
            "currency": PRO_ANNUAL.currency,
            "status": "active",
            "created_at": created,
            "activated_at": created,
            "current_period_end": created + 365 * DAY,
        }
        self.rows.append(orphan)
        self._case_rows["orphan_row"] = [orphan]
        self.cases["orphan_row"] = {
            "kinds": ["active_without_payment"],
            "email": customer["email"],
            "customer_id": customer["id"],
            "payment_id": None,
            "event_ids": [],
            "row_ids": [],
            "note": "active row written by the fake-webhook fallback; its checkout session does not exist",
            "dangling_checkout_session_id": orphan["stripe_checkout_session_id"],
        }

        customer = self._case_customer("refunded_active", now - 12 * DAY)
        pay = self.one_time(customer, PRO_ANNUAL, now - 12 * DAY + 60)
        row = self.row(pay)
        refund = self.refund(pay, PRO_ANNUAL.amount, now - 9 * DAY)
        self._case(
            "refunded_active",
            ["refunded_but_active"],
            pay,
            [row],
            "fully refunded three days after paying; the row is still active",
            refund_id=refund["id"],
        )

        customer = self._case_customer("dispute_lost", now - 27 * DAY)
        pay = self.one_time(customer, TEAM_ANNUAL, now - 27 * DAY + 45)
        row = self.row(pay)
        dispute = self.dispute(pay, now - 21 * DAY, "fraudulent", closed=now - 4 * DAY)
        self._case(
            "dispute_lost",
            ["refunded_but_active"],
            pay,
            [row],
            "dispute lost four days ago; the row is still active",
            dispute_id=dispute["id"],
        )

        # After the move: delivered to staging, absent from the app's log; the success page made the row.
        customer = self._case_customer("delivered_to_staging", now - 26 * HOUR)
        pay = self.one_time(customer, PRO_ANNUAL, now - 26 * HOUR + 10)
        row = self.row(pay, created_at=pay.paid_at + 9)
        self._case(
            "delivered_to_staging",
            ["webhook_missing"],
            pay,
            [row],
            "checkout.session.completed delivered (to staging) but absent from the app's log; "
            "all_missing_event_ids lists every such event of the scenario",
        )

        customer = self._case_customer("partial_refund", now - 9 * DAY)
        pay = self.one_time(customer, TEAM_ANNUAL, now - 9 * DAY + 30)
        row = self.row(pay)
        refund = self.refund(pay, 10000, now - 8 * DAY)
        self._case(
            "partial_refund",
            [],
            pay,
            [row],
            "10000 of 29900 refunded; the row stays active: fine",
            refund_id=refund["id"],
        )

        customer = self._case_customer("open_dispute", now - 16 * DAY)
        pay = self.one_time(customer, PRO_ANNUAL, now - 16 * DAY + 35)
        row = self.row(pay)
        dispute = self.dispute(pay, now - 5 * DAY, "product_not_received")
        self._case(
            "open_dispute",
            [],
            pay,
            [row],
            "dispute awaiting a response, not lost: fine",
            dispute_id=dispute["id"],
        )

        # Paid two minutes ago, its event still on its way: inside the grace period, nothing to report.
        customer = self._case_customer("within_grace", now - 200)
        pay = self.one_time(customer, PRO_ANNUAL, now - 240, pending=1, paid_at=now - 120)
        self._case("within_grace", [], pay, [], "paid two minutes ago; no row yet, event still pending: fine")


# --- the demo app database -----------------------------------------------------------------------------


def ensure_demo_app_db(url: str, now: datetime | None = None) -> datetime:
    """Create the demo app database at `url` unless it exists; return the scenario's anchor.

    A new database gets the default schema, the rows and webhook log of `build_demo(anchor)` with anchor
    = `now` (default: the current UTC minute), and keeps the anchor (monitor.app_db.ensure_demo_database).
    """
    from monitor.app_db import ensure_demo_database

    anchor = whole_utc(now) if now else datetime.now(UTC).replace(second=0, microsecond=0)

    def build(at: datetime) -> tuple[list, list]:
        demo = build_demo(at)
        return demo.rows, demo.webhook_log

    return ensure_demo_database(url, anchor, build)
